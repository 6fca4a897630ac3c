"""SANDBOX ONLY: the identity platform's test knobs over HTTP (``POST /_sandbox/<knob>``).

They let a test in another process drive what an in-process test calls directly: the
clock, "Revoke sessions", token lifetimes, counters, minting, consents and directory
switches. Bodies and answers are JSON; the platform's lock is held by the dispatcher.

=================  ==========================================================================
knob               body
=================  ==========================================================================
clock              ``{"advance": seconds}`` → ``{"now", "offset"}``
revoke-sessions    ``{"upn"}``
settings           ``{"access_token_lifetime", "refresh_grace_seconds", "code_ttl"}`` (any)
counters           ``{"reset": bool}`` → ``{"token_requests": {grant_type: n}}``
mint               ``{"upn", "scopes", "client_id"?, "lifetime"?}`` → ``{"access_token", …}``
consents           ``{"client_id", "upn" | "tenant_id", "scopes": [...], "revoke": bool}``
mailbox            ``{"upn", "set": {"mfa_required": true, …}}``
tenant             ``{"id", "set": {"users_may_consent": false, …}}``
=================  ==========================================================================
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from konvergo.sandbox.idp_web import Reply, Request, json_reply

if TYPE_CHECKING:
    from konvergo.sandbox.idp import IdentityPlatform


class Knobs:
    def __init__(self, platform: IdentityPlatform) -> None:
        self.p = platform
        self.table: dict[str, Callable[[dict[str, Any]], Any]] = {
            "clock": self.clock,
            "revoke-sessions": self.revoke,
            "settings": self.settings,
            "counters": self.counters,
            "mint": self.mint,
            "consents": self.consents,
            "mailbox": lambda d: self.set(self.p.world.mailbox(str(d.get("upn", ""))), d),
            "tenant": lambda d: self.set(self.p.world.tenant(str(d.get("id", ""))), d),
        }

    def handle(self, name: str, request: Request) -> Reply:
        knob = self.table.get(name)
        if knob is None:
            return json_reply({"error": f"no knob {name!r}", "knobs": sorted(self.table)}, 404)
        try:
            return json_reply(knob(request.json()))
        except (KeyError, ValueError, TypeError) as exc:
            return json_reply({"error": str(exc)}, 400)

    def clock(self, data: dict[str, Any]) -> dict[str, Any]:
        if "advance" in data:
            self.p.advance_clock(float(data["advance"]))
        return {"now": self.p.now(), "offset": self.p.now() - time.time()}

    def revoke(self, data: dict[str, Any]) -> dict[str, Any]:
        self.p.revoke_sessions(str(data["upn"]))
        return {"upn": str(data["upn"]).lower(), "tokens_valid_from": self.p.now()}

    def settings(self, data: dict[str, Any]) -> dict[str, Any]:
        if "access_token_lifetime" in data:
            value = data["access_token_lifetime"]
            self.p.access_token_lifetime = None if value is None else int(value)
        if "refresh_grace_seconds" in data:
            self.p.refresh_grace_seconds = float(data["refresh_grace_seconds"])
        if "code_ttl" in data:
            self.p.code_ttl = int(data["code_ttl"])
        return {
            "access_token_lifetime": self.p.access_token_lifetime,
            "refresh_grace_seconds": self.p.refresh_grace_seconds,
            "code_ttl": self.p.code_ttl,
        }

    def counters(self, data: dict[str, Any]) -> dict[str, Any]:
        counts = dict(self.p.token_requests)
        if data.get("reset"):
            self.p.reset_counters()
        return {"token_requests": counts}

    def mint(self, data: dict[str, Any]) -> dict[str, Any]:
        token = self.p.mint_access_token(
            str(data["upn"]), data["scopes"], data.get("client_id"), data.get("lifetime")
        )
        return {"access_token": token, "expires_at": self.p.access_tokens[token].expires_at}

    def consents(self, data: dict[str, Any]) -> dict[str, Any]:
        client_id, scopes = data.get("client_id"), data.get("scopes", [])
        if client_id and data.get("upn"):
            if data.get("revoke"):
                self.p.consents.revoke(str(data["upn"]), str(client_id))
            else:
                self.p.consents.grant(str(data["upn"]), str(client_id), scopes)
        elif client_id and data.get("tenant_id"):
            if data.get("revoke"):
                self.p.consents.revoke_admin(str(data["tenant_id"]), str(client_id))
            else:
                self.p.consents.grant_admin(str(data["tenant_id"]), str(client_id), scopes)
        return self.p.consents.snapshot()

    def set(self, target: Any, data: dict[str, Any]) -> dict[str, Any]:
        """Flip directory switches (mfa_required, users_may_consent …) of a mailbox/tenant."""
        if target is None:
            raise KeyError("no such mailbox or tenant")
        names = {f.name for f in fields(target)} - {"upn", "id", "tenant_id", "oid"}
        for key, value in data.get("set", {}).items():
            if key not in names:
                raise KeyError(f"cannot set {key!r}")
            setattr(target, key, value)
        return {f.name: getattr(target, f.name) for f in fields(target) if f.name != "password"}
