"""Per-user API keys: shown once at creation, stored as a SHA-256 digest."""

from __future__ import annotations

from typing import Any


def user_for_key(key: str) -> Any:
    """The active user owning ``key``, or None."""
    return None
