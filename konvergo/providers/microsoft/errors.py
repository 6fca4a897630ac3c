"""Parsing of Microsoft identity-platform errors (token endpoint JSON and callback query).

Shape (research/microsoft.md §1.5)::

    {"error": "invalid_grant",
     "error_description": "AADSTS700082: …\\r\\nTrace ID: …\\r\\nCorrelation ID: …",
     "error_codes": [700082], "timestamp": "…", "trace_id": "…", "correlation_id": "…",
     "error_uri": "https://login.microsoftonline.com/error?code=700082", "suberror": "…"}

Microsoft advises reacting to ``error`` and the code, never to the description text, so the
failure class comes from the catalogue row of the AADSTS code, then from ``error`` and the
HTTP status, all as tables. The raw description is kept verbatim for support.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from konvergo.errors import AuthorizationError
from konvergo.providers.microsoft.catalogue import Explanation, FailureClass, Surface, explain

#: OAuth ``error`` values and what the product does about them when the catalogue has no row
#: for the AADSTS code. Grant problems hold mail until reconnect; client problems need an
#: admin; Microsoft-side trouble is retried.
ERROR_CLASSES: Mapping[str, FailureClass] = MappingProxyType(
    {
        "invalid_grant": "authorization",
        "interaction_required": "authorization",
        "consent_required": "authorization",
        "login_required": "authorization",
        "access_denied": "authorization",
        "invalid_client": "configuration",
        "unauthorized_client": "configuration",
        "invalid_request": "configuration",
        "invalid_scope": "configuration",
        "invalid_resource": "configuration",
        "unsupported_grant_type": "configuration",
        "unsupported_response_type": "configuration",
        "temporarily_unavailable": "temporary",
        "server_error": "temporary",
    }
)

#: HTTP statuses that mean "try again later" whatever the body says.
TEMPORARY_STATUSES: frozenset[int] = frozenset({408, 425, 429, 500, 502, 503, 504})

_AADSTS_RE = re.compile(r"\bAADSTS(\d{4,9})\b")
_SUFFIX_PATTERNS: Mapping[str, re.Pattern[str]] = MappingProxyType(
    {
        "trace_id": re.compile(r"Trace ID:\s*([0-9a-fA-F-]{36})"),
        "correlation_id": re.compile(r"Correlation ID:\s*([0-9a-fA-F-]{36})"),
        "timestamp": re.compile(r"Timestamp:\s*(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\dZ?)"),
    }
)
# Non-JSON bodies (HTML error pages from a proxy, truncated responses) are kept for support,
# but only this much: they can be large, and they end up in the outbox record and logs.
_MAX_RAW = 2000


class IdentityError(AuthorizationError):
    """Microsoft's identity platform refused a request; fields mirror its error JSON.

    Subclasses ``AuthorizationError`` so callers that only know ``konvergo.errors`` hold the
    mail; ``failure_class`` refines that ("temporary" for a 503 means retry, not reconnect).
    """

    surface: Surface = "token"

    def __init__(
        self,
        *,
        error: str,
        error_description: str = "",
        error_codes: list[int] | None = None,
        suberror: str | None = None,
        trace_id: str | None = None,
        correlation_id: str | None = None,
        timestamp: str | None = None,
        error_uri: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        raw: str = "",
    ) -> None:
        # Kept so the exception survives pickling (worker processes hand errors back to the
        # parent); Exception's default pickling would call __init__ with the message only.
        self._init_kwargs: dict[str, Any] = {
            "error": error,
            "error_description": error_description,
            "error_codes": error_codes,
            "suberror": suberror,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "timestamp": timestamp,
            "error_uri": error_uri,
            "status": status,
            "retry_after": retry_after,
            "raw": raw,
        }
        self.error = error
        self.error_description = error_description
        self.error_codes: list[int] = list(error_codes or [])
        self.suberror = suberror
        self.trace_id = trace_id
        self.correlation_id = correlation_id
        self.timestamp = timestamp
        self.error_uri = error_uri
        self.status = status
        self.retry_after = retry_after
        self.raw = raw
        self.explanation: Explanation | None = explain(
            error_description or raw, surface=self.surface, codes=self.error_codes
        )
        super().__init__(
            self._message(),
            error=error,
            aadsts=self.aadsts,
            status=status,
            trace_id=trace_id,
            correlation_id=correlation_id,
            explanation=self.explanation,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self._init_kwargs))

    @property
    def aadsts(self) -> int | None:
        """The leading AADSTS number of the description, else the first of ``error_codes``."""
        found = _AADSTS_RE.search(self.error_description or self.raw)
        if found:
            return int(found.group(1))
        return self.error_codes[0] if self.error_codes else None

    @property
    def failure_class(self) -> FailureClass:
        """What the product does: reconnect, ask an admin, retry, or fail the message."""
        # A Microsoft outage answers 5xx/429 or temporarily_unavailable whatever the code.
        if self.status in TEMPORARY_STATUSES or self.error == "temporarily_unavailable":
            return "temporary"
        if self.explanation is not None:
            return self.explanation.failure_class
        if self.error in ERROR_CLASSES:
            return ERROR_CLASSES[self.error]
        if self.status is not None and self.status >= 500:
            return "temporary"
        # Unknown 4xx about our grant or client: hold mail rather than burn attempts.
        return "authorization"

    def _message(self) -> str:
        head = self.error or (f"HTTP {self.status}" if self.status else "error")
        first_line = _strip_suffix(self.error_description) or self.raw[:200]
        return f"Microsoft {self.surface} error {head}: {first_line}".rstrip(": ")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the API, the grant's last error and the CLI."""
        return {
            "error": self.error,
            "error_description": self.error_description,
            "error_codes": list(self.error_codes),
            "aadsts": self.aadsts,
            "suberror": self.suberror,
            "trace_id": self.trace_id,
            "correlation_id": self.correlation_id,
            "timestamp": self.timestamp,
            "error_uri": self.error_uri,
            "status": self.status,
            "retry_after": self.retry_after,
            "failure_class": self.failure_class,
            "explanation": self.explanation.as_dict() if self.explanation else None,
        }


class TokenEndpointError(IdentityError):
    """The ``/token`` endpoint answered with an error (code redemption or refresh)."""

    surface: Surface = "token"


class AuthorizeError(IdentityError):
    """Microsoft redirected back to ``/microsoft_outlook/confirm`` with ``?error=…``."""

    surface: Surface = "authorize"


def _rebuild(cls: type[IdentityError], kwargs: dict[str, Any]) -> IdentityError:
    return cls(**kwargs)


def _strip_suffix(description: str) -> str:
    # Both "\r\nTrace ID: …" (raw JSON) and " Trace ID: …" (one-line logs) end the message.
    return re.split(r"\s*Trace ID:", description, maxsplit=1)[0].strip()


def _suffix_field(name: str, description: str) -> str | None:
    found = _SUFFIX_PATTERNS[name].search(description)
    return found.group(1) if found else None


def _as_int_list(value: Any) -> list[int]:
    if not isinstance(value, list):
        return []
    out: list[int] = []
    for item in value:
        # Codes are ints in Microsoft's JSON; strings appear in re-serialised logs.
        if isinstance(item, int) and not isinstance(item, bool):
            out.append(item)
        elif isinstance(item, str) and item.strip().isdigit():
            out.append(int(item))
    return out


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None  # an HTTP date; callers fall back to their own backoff
    return None


def parse_token_error(
    status: int,
    body: bytes | str | Mapping[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
) -> TokenEndpointError:
    """Turn a ``/token`` error response into a ``TokenEndpointError``; never raises itself.

    Accepts the parsed JSON, its text or its bytes; a body that is not a JSON object (an
    HTML page from a proxy, an empty body) still yields an error carrying the raw text and
    the HTTP status, so the caller can classify it (5xx and 429 → "temporary").
    """
    data: Mapping[str, Any] | None = body if isinstance(body, Mapping) else None
    raw = ""
    if data is None:
        raw = (
            body.decode("utf-8", errors="replace") if isinstance(body, bytes) else str(body)
        ).strip()
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = None
        data = decoded if isinstance(decoded, Mapping) else None
    if data is None:
        return TokenEndpointError(
            error="",
            status=status,
            retry_after=_retry_after(headers),
            raw=raw[:_MAX_RAW],
        )
    return _from_fields(TokenEndpointError, data, status=status, headers=headers, raw=raw)


def parse_authorize_error(params: Mapping[str, str]) -> AuthorizeError:
    """Turn the ``?error=…&error_description=…`` of the confirm callback into an error.

    ``params`` are the already URL-decoded query parameters.
    """
    return _from_fields(AuthorizeError, params, status=None, headers=None, raw="")


_E = TypeVar("_E", bound=IdentityError)


def _from_fields(
    cls: type[_E],
    data: Mapping[str, Any],
    *,
    status: int | None,
    headers: Mapping[str, str] | None,
    raw: str,
) -> _E:
    description = str(data.get("error_description") or "")
    codes = _as_int_list(data.get("error_codes"))
    if not codes:
        # Callback errors have no error_codes array; the description names the code.
        codes = [int(c) for c in _AADSTS_RE.findall(description)[:1]]
    return cls(
        error=str(data.get("error") or ""),
        error_description=description,
        error_codes=codes,
        suberror=_opt_str(data.get("suberror")),
        # The JSON fields win; the description suffix is the fallback (callback, logs).
        trace_id=_opt_str(data.get("trace_id")) or _suffix_field("trace_id", description),
        correlation_id=_opt_str(data.get("correlation_id"))
        or _suffix_field("correlation_id", description),
        timestamp=_opt_str(data.get("timestamp")) or _suffix_field("timestamp", description),
        error_uri=_opt_str(data.get("error_uri")),
        status=status,
        retry_after=_retry_after(headers),
        raw=raw[:_MAX_RAW],
    )
