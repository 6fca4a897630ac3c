"""Settings → Users (administrators only)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from konvergo.store.models import AuditEvent, User
from konvergo.web.access import admin_required


class UserForm(forms.ModelForm):  # type: ignore[type-arg]
    password = forms.CharField(
        required=False,
        label="Password",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Leave empty to keep the current password.",
    )

    class Meta:
        model = User
        fields = ["username", "first_name", "last_name", "email", "role", "is_active"]

    def clean_password(self) -> str:
        password: str = self.cleaned_data.get("password", "")
        if not password and not self.instance.pk:
            raise ValidationError("A new user needs a password.")
        if password:
            validate_password(password, self.instance)
        return password


@admin_required
def user_list(request: HttpRequest) -> HttpResponse:
    users = User.objects.order_by("username")
    return render(request, "konvergo/settings/users.html", {"users": users})


@admin_required
def user_edit(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    instance = get_object_or_404(User, pk=pk) if pk else None
    form = UserForm(request.POST or None, instance=instance)
    if request.method == "POST" and form.is_valid():
        user = form.save(commit=False)
        if (
            instance is not None
            and instance.pk == request.user.pk
            and not User(role=user.role, is_active=user.is_active).is_administrator
            and not user.is_superuser
        ):
            form.add_error("role", "You cannot remove your own Administrator role.")
        else:
            if form.cleaned_data["password"]:
                user.set_password(form.cleaned_data["password"])
            user.save()
            AuditEvent.record("user.saved", user.username, actor=request.user)
            messages.success(request, f"Saved user {user.username}.")
            return redirect("users")
    return render(request, "konvergo/settings/user_edit.html", {"form": form, "instance": instance})
