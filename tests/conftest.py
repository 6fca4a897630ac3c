"""Shared fixtures. Tests talk to real servers on loopback; nothing here mocks a protocol."""

from __future__ import annotations

import os

# The ORM is used from Playwright-driven tests, whose event loop would otherwise trip Django's
# async-safety guard; tests never run ORM code concurrently with the loop.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
