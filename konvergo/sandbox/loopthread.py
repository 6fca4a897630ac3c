"""SANDBOX ONLY: run an asyncio server on its own event loop in a daemon thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from konvergo.errors import ConfigurationError


def serve_in_thread(
    loop: asyncio.AbstractEventLoop,
    serve: Callable[[], Coroutine[Any, Any, None]],
    name: str,
) -> threading.Thread:
    """Start ``serve()`` on ``loop`` in a thread; return once it listens (or fail in 10 s)."""
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    if not ready.wait(10):
        raise ConfigurationError(f"the {name} server did not start")
    return thread
