"""Users and their roles."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A person who logs in: an Administrator (may open Settings) or an Internal User."""

    class Role(models.TextChoices):
        ADMINISTRATOR = "admin", "Administrator"
        INTERNAL = "user", "Internal User"

    role = models.CharField(max_length=16, choices=Role.choices, default=Role.INTERNAL)
    developer_mode = models.BooleanField(
        default=False, help_text="Shows technical menus such as System Parameters."
    )

    @property
    def is_administrator(self) -> bool:
        """True for the Administrator role and for superusers made by createsuperuser."""
        return self.is_active and (self.role == self.Role.ADMINISTRATOR or self.is_superuser)

    def save(self, *args: object, **kwargs: object) -> None:
        # A superuser created from the command line is an Administrator in our UI as well.
        if self.is_superuser:
            self.role = self.Role.ADMINISTRATOR
        super().save(*args, **kwargs)  # type: ignore[arg-type]
