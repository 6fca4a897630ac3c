"""An append-only trail of what administrators and the system did."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    """One event: who did what to which object, and a short detail (never a secret)."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=128, blank=True, default="")
    detail = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at"]

    @classmethod
    def record(cls, action: str, target: str = "", detail: str = "", actor: object = None) -> None:
        cls.objects.create(
            action=action,
            target=target,
            detail=detail,
            actor=actor if getattr(actor, "pk", None) else None,
        )
