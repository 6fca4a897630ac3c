"""Konvergo's Django email backend: ``konvergo.mail.backend.KonvergoEmailBackend``.

Any Django project (and Django's own ``send_mail``) sends through the outbox with::

    EMAIL_BACKEND = "konvergo.mail.backend.KonvergoEmailBackend"

or, from Django 6.1, ``MAILERS = {"default": {"BACKEND": ..., "OPTIONS": {"purpose": ...}}}``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KonvergoEmailBackend"]


def __getattr__(name: str) -> Any:
    # Lazy: the backend imports the models, which only exist once Django's apps are ready.
    if name == "KonvergoEmailBackend":
        from konvergo.mail.backend import KonvergoEmailBackend

        return KonvergoEmailBackend
    raise AttributeError(name)
