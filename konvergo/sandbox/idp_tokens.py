"""SANDBOX ONLY: the identity platform's signing key and token formats.

Work-account access tokens and all ID tokens are RS256 JWTs signed with a key published
at ``/discovery/v2.0/keys``; personal-account (MSA) access tokens are opaque strings like
Microsoft's (``EwB…``), so a client that parses access tokens breaks here as it would there.
"""

from __future__ import annotations

import secrets
import threading
import warnings
from typing import Any

import authlib.deprecate  # noqa: F401  (installs its "always" filter before ours below)

with warnings.catch_warnings():
    # authlib.jose is deprecated in favour of joserfc but stays until Authlib 2.0.
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.jose import JsonWebKey, jwt

_KEY_LOCK = threading.Lock()
_KEY: Any = None


def signing_key() -> Any:
    """One RSA key per process: generating 2048-bit keys per server would slow every test."""
    global _KEY
    with _KEY_LOCK:
        if _KEY is None:
            _KEY = JsonWebKey.generate_key("RSA", 2048, is_private=True)
        return _KEY


def key_id() -> str:
    return str(signing_key().thumbprint())


def jwks() -> dict[str, Any]:
    """The public key set, shaped like Microsoft's (``kid``, ``x5t``, ``use``)."""
    public = signing_key().as_dict(is_private=False)
    public.update({"use": "sig", "kid": key_id(), "x5t": key_id()})
    return {"keys": [public]}


def sign(claims: dict[str, Any]) -> str:
    header = {"alg": "RS256", "typ": "JWT", "kid": key_id(), "x5t": key_id()}
    token: bytes = jwt.encode(header, claims, signing_key())
    return token.decode("ascii")


def decode(token: str) -> dict[str, Any]:
    """Verify and decode a JWT this platform signed (raises on a bad signature)."""
    claims = jwt.decode(token, signing_key())
    return dict(claims)


def opaque(prefix: str = "EwB", size: int = 160) -> str:
    """An opaque token: Microsoft's MSA tokens and all refresh tokens look like this."""
    return prefix + secrets.token_urlsafe(size)[: size - len(prefix)]
