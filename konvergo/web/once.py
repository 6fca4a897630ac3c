"""Secrets shown once, on the page after the request that created them.

Between the two requests the secret waits in the session, encrypted like every secret
Konvergo stores: sessions live in the database, and Django's message cookie is signed, not
encrypted. Taking it removes it, so a reload shows it no more.
"""

from __future__ import annotations

from django.http import HttpRequest

from konvergo.errors import SecretError
from konvergo.security import crypto

_PREFIX = "once:"


def keep(request: HttpRequest, name: str, secret: str) -> None:
    """Hold ``secret`` for the next page that takes ``name``."""
    request.session[_PREFIX + name] = crypto.encrypt(secret)


def take(request: HttpRequest, name: str) -> str | None:
    """The secret kept under ``name``, once; None when there is none (or it cannot be read
    any more because the encryption keys changed meanwhile)."""
    stored = request.session.pop(_PREFIX + name, None)
    if not isinstance(stored, str):
        return None
    try:
        return crypto.decrypt(stored)
    except SecretError:
        return None
