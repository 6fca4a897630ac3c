"""The one place outgoing TLS is configured: every client connection verifies its server.

Odoo connects to SMTP and IMAP servers with an unverified context, so anyone on the path can
read the bearer token (odoo.md, weakness 2). Here verification cannot be switched off: there
is no parameter for it, and the only knobs add trust anchors (``KONVERGO_CA_BUNDLE`` for a
company CA, ``cafile`` for tests) on top of the system store.
"""

from __future__ import annotations

import os
import ssl
import threading
import time

from konvergo.config import get_config
from konvergo.errors import ConfigurationError

#: Exchange Online refuses TLS 1.0/1.1 (``421 4.7.66``) and so do we, for every server.
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def client_context(cafile: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """A client context that requires a valid certificate for the host name it connects to.

    Trusted: the system CA store, plus ``KONVERGO_CA_BUNDLE`` when set, plus ``cafile`` when
    given. Extra CA files only add trust; they never replace the system store.
    """
    # create_default_context already sets CERT_REQUIRED and check_hostname and loads the
    # system store; they are set again explicitly so a reader does not have to know that.
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.minimum_version = MINIMUM_VERSION
    extra = get_config().ca_bundle
    for path, origin in ((extra, "KONVERGO_CA_BUNDLE"), (cafile, "cafile")):
        if path is None:
            continue
        try:
            context.load_verify_locations(cafile=os.fspath(path))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"{origin} points to {os.fspath(path)}, which could not be loaded as PEM "
                f"CA certificates ({exc}); fix or unset it.",
                setting=origin,
            ) from exc
    return context


#: (CA files with their mtimes) -> (created, context); each rebuilt after _CONTEXT_TTL.
_CONTEXTS: dict[tuple[tuple[str, float] | None, ...], tuple[float, ssl.SSLContext]] = {}
_CONTEXTS_LOCK = threading.Lock()
_CONTEXT_TTL = 600.0


def _stamp(path: str | os.PathLike[str] | None) -> tuple[str, float] | None:
    return None if path is None else (os.fspath(path), os.stat(path).st_mtime)


def shared_client_context(cafile: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """:func:`client_context`, reused while the CA files are unchanged (10 minutes at most).

    Building a context loads the whole system CA store (~40 ms of CPU): more than the TLS
    handshake itself, paid by every SMTP session and IMAP connection. A context is safe to
    share between connections and threads as long as nobody changes it, and nobody does:
    the transports only wrap sockets with it. A changed CA file (rotation) is picked up at
    once through its modification time; the system store within ten minutes.
    """
    try:
        key = (_stamp(get_config().ca_bundle), _stamp(cafile))
    except OSError:
        return client_context(cafile)  # raises the configuration error that explains it
    now = time.monotonic()
    with _CONTEXTS_LOCK:
        known = _CONTEXTS.get(key)
        if known is not None and now - known[0] < _CONTEXT_TTL:
            return known[1]
    context = client_context(cafile)
    with _CONTEXTS_LOCK:
        if len(_CONTEXTS) >= 8:  # tests use many CA files; production one
            _CONTEXTS.clear()
        _CONTEXTS[key] = (now, context)
    return context
