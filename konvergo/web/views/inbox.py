"""The Inbox: threads, a thread view, reply and compose, attachment downloads."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from konvergo.errors import KonvergoError, ValidationFailed
from konvergo.services import inbox as inbox_service
from konvergo.store.models import Attachment


def _split(value: str) -> list[str]:
    return [a.strip() for a in value.replace(";", ",").split(",") if a.strip()]


class ComposeForm(forms.Form):
    to = forms.CharField(label="To", help_text="Comma-separated addresses.")
    cc = forms.CharField(label="Cc", required=False)
    subject = forms.CharField(label="Subject", max_length=998)
    text = forms.CharField(label="Message", widget=forms.Textarea(attrs={"rows": 8}))
    attachment = forms.FileField(label="Attachment", required=False)


@login_required
def thread_list(request: HttpRequest) -> HttpResponse:
    threads = inbox_service.visible_threads(request.user).prefetch_related("participants")[:200]
    return render(request, "konvergo/inbox/list.html", {"threads": threads})


def _send(request: HttpRequest, form: ComposeForm, thread: object = None) -> bool:
    if not form.is_valid():
        return False
    upload = form.cleaned_data.get("attachment")
    attachments = (
        [
            (
                upload.name or "attachment",
                upload.read(),
                upload.content_type or "application/octet-stream",
            )
        ]
        if upload
        else []
    )
    try:
        inbox_service.send(
            user=request.user,
            to=_split(form.cleaned_data["to"]),
            cc=_split(form.cleaned_data["cc"]),
            subject=form.cleaned_data["subject"],
            text=form.cleaned_data["text"],
            thread=thread,  # type: ignore[arg-type]
            attachments=attachments,
        )
    except ValidationFailed as exc:
        form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        return False
    except KonvergoError as exc:
        form.add_error(None, str(exc))
        return False
    messages.success(request, "Queued: the worker sends it through the outbox.")
    return True


@login_required
def thread_view(request: HttpRequest, pk: int) -> HttpResponse:
    thread = get_object_or_404(inbox_service.visible_threads(request.user), pk=pk)
    thread_messages = inbox_service.with_text(
        thread.messages.defer("raw").prefetch_related("attachments")
    )
    last = thread_messages[-1] if thread_messages else None
    own = (getattr(request.user, "email", "") or "").lower()
    reply_to = ""
    if last is not None:
        # Answer whoever wrote last, unless that was us: then answer the original recipients.
        reply_to = last.from_address if last.direction == "in" else last.to
    subject = (
        thread.subject if thread.subject.lower().startswith("re:") else f"Re: {thread.subject}"
    )
    form = ComposeForm(
        request.POST or None,
        request.FILES or None,
        initial={"to": reply_to, "subject": subject},
    )
    if request.method == "POST" and _send(request, form, thread):
        return redirect("thread", pk=pk)
    return render(
        request,
        "konvergo/inbox/thread.html",
        {"thread": thread, "thread_messages": thread_messages, "form": form, "own": own},
    )


@login_required
def compose(request: HttpRequest) -> HttpResponse:
    form = ComposeForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and _send(request, form):
        return redirect("inbox")
    return render(request, "konvergo/inbox/compose.html", {"form": form})


@login_required
def attachment(request: HttpRequest, pk: int) -> FileResponse:
    item = get_object_or_404(
        Attachment.objects.filter(message__thread__in=inbox_service.visible_threads(request.user)),
        pk=pk,
    )
    import io

    # Always a download, never rendered inline: an attached HTML file must not run here.
    return FileResponse(
        io.BytesIO(bytes(item.content)),
        as_attachment=True,
        filename=item.filename or "attachment",
        content_type="application/octet-stream",
    )
