"""Settings → Technical → Parameters → System Parameters (developer mode only)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from konvergo.errors import ValidationFailed
from konvergo.services import parameters
from konvergo.store.models import AuditEvent, SystemParameter
from konvergo.web.access import developer_mode_required


class ParameterForm(forms.Form):
    key = forms.CharField(max_length=255, label="Key")
    value = forms.CharField(required=False, label="Value", widget=forms.Textarea(attrs={"rows": 2}))


def _save(request: HttpRequest, form: ParameterForm, instance: SystemParameter | None) -> bool:
    if not form.is_valid():
        return False
    try:
        key, value = parameters.clean(form.cleaned_data["key"], form.cleaned_data["value"])
    except ValidationFailed as exc:
        form.add_error("key" if exc.field == "key" else "value", exc.message)
        return False
    clash = SystemParameter.objects.filter(key=key)
    if instance is not None:
        clash = clash.exclude(pk=instance.pk)
    if clash.exists():
        form.add_error("key", f"A parameter named '{key}' already exists.")
        return False
    row = instance or SystemParameter()
    row.key, row.value = key, value
    row.save()
    AuditEvent.record("parameter.saved", key, actor=request.user)
    messages.success(request, f"Saved {key}.")
    return True


@developer_mode_required
def parameter_list(request: HttpRequest) -> HttpResponse:
    form = ParameterForm(request.POST or None)
    if request.method == "POST" and _save(request, form, None):
        return redirect("parameters")
    known = dict(parameters.KNOWN)
    rows = list(SystemParameter.objects.all())
    stored = {r.key for r in rows}
    return render(
        request,
        "konvergo/settings/parameters.html",
        {
            "rows": rows,
            "form": form,
            "missing_known": [(k, p) for k, p in known.items() if k not in stored],
            "known": known,
        },
    )


@developer_mode_required
def parameter_edit(request: HttpRequest, pk: int) -> HttpResponse:
    row = get_object_or_404(SystemParameter, pk=pk)
    form = ParameterForm(request.POST or None, initial={"key": row.key, "value": row.value})
    if request.method == "POST" and _save(request, form, row):
        return redirect("parameters")
    return render(request, "konvergo/settings/parameter_edit.html", {"row": row, "form": form})


@require_POST
@developer_mode_required
def parameter_delete(request: HttpRequest, pk: int) -> HttpResponse:
    row = get_object_or_404(SystemParameter, pk=pk)
    AuditEvent.record("parameter.deleted", row.key, actor=request.user)
    row.delete()
    messages.success(request, f"Deleted {row.key}.")
    return redirect("parameters")
