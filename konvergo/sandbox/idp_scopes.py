"""SANDBOX ONLY: how the identity platform reads ``scope`` strings.

A scope is ``<resource URI>/<permission>`` or an OpenID Connect scope. A bare permission
name (``SMTP.Send``) belongs to Microsoft Graph, which is why requesting it yields a token
Exchange refuses (research §1.6, E-10).
"""

from __future__ import annotations

from dataclasses import dataclass

from konvergo.sandbox.tokens import OUTLOOK_RESOURCE

GRAPH_RESOURCE = "https://graph.microsoft.com"
EXCHANGE_APP_ID = "00000002-0000-0ff1-ce00-000000000000"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
OIDC_SCOPES = ("openid", "profile", "email", "offline_access")

#: Resource URI (lower-case, no trailing slash) -> the resource's application id. Several
#: URIs name Exchange Online; tokens keep the URI asked for as ``aud``.
RESOURCES: dict[str, str] = {
    OUTLOOK_RESOURCE: EXCHANGE_APP_ID,
    "https://outlook.office365.com": EXCHANGE_APP_ID,
    "https://ps.outlook.com": EXCHANGE_APP_ID,
    GRAPH_RESOURCE: GRAPH_APP_ID,
}

_SMTP = ("SMTP.Send", "Send emails from mailboxes using SMTP AUTH.")
_IMAP = ("IMAP.AccessAsUser.All", "Read and write access to mailboxes via IMAP.")
_POP = ("POP.AccessAsUser.All", "Read and write access to mailboxes via POP.")

#: Delegated permissions per resource application: lower-case name -> (name, consent text).
DELEGATED: dict[str, dict[str, tuple[str, str]]] = {
    EXCHANGE_APP_ID: {
        "smtp.send": _SMTP,
        "imap.accessasuser.all": _IMAP,
        "pop.accessasuser.all": _POP,
        "ews.accessasuser.all": ("EWS.AccessAsUser.All", "Access mailboxes via EWS."),
    },
    GRAPH_APP_ID: {
        "user.read": ("User.Read", "Sign you in and read your profile"),
        "mail.read": ("Mail.Read", "Read your mail"),
        "mail.readbasic": ("Mail.ReadBasic", "Read basic mail"),
        "mail.readwrite": ("Mail.ReadWrite", "Read and write access to your mail"),
        "mail.send": ("Mail.Send", "Send mail as you"),
        "mail.send.shared": ("Mail.Send.Shared", "Send mail on behalf of others"),
        # The portal lists the mail-protocol permissions under Microsoft Graph (§1.6), so
        # a bare or Graph-prefixed name is valid and yields a Graph-audience token.
        "smtp.send": _SMTP,
        "imap.accessasuser.all": _IMAP,
        "pop.accessasuser.all": _POP,
    },
}

OIDC_TEXT = {
    "openid": "Sign you in",
    "profile": "View your basic profile",
    "email": "View your email address",
    "offline_access": "Maintain access to data you have given it access to",
}


@dataclass(frozen=True)
class Scope:
    """One requested scope; ``resource`` is empty for OpenID Connect scopes."""

    resource: str
    name: str

    @property
    def oidc(self) -> bool:
        return not self.resource

    @property
    def resource_app(self) -> str:
        return RESOURCES.get(self.resource, "")

    @property
    def uri(self) -> str:
        return f"{self.resource}/{self.name}" if self.resource else self.name

    @property
    def key(self) -> str:
        """The consent key: the resource application and the permission, case-folded."""
        return f"{self.resource_app}/{self.name.lower()}" if self.resource else self.name

    @property
    def known(self) -> bool:
        return self.oidc or self.name.lower() in DELEGATED.get(self.resource_app, {})

    @property
    def canonical_name(self) -> str:
        entry = DELEGATED.get(self.resource_app, {}).get(self.name.lower())
        return entry[0] if entry else self.name

    @property
    def description(self) -> str:
        if self.oidc:
            return OIDC_TEXT[self.name]
        entry = DELEGATED.get(self.resource_app, {}).get(self.name.lower())
        return entry[1] if entry else self.name


def parse_one(text: str) -> Scope:
    """``https://outlook.office.com/SMTP.Send`` -> (outlook, SMTP.Send); bare -> Graph."""
    if text.lower() in OIDC_SCOPES:
        return Scope("", text.lower())
    if "://" in text:
        resource, _, name = text.rpartition("/")
        return Scope(resource.lower(), name)
    return Scope(GRAPH_RESOURCE, text)


def parse(text: str | None) -> list[Scope]:
    """Space-separated scopes, in order, without duplicates."""
    seen: dict[str, Scope] = {}
    for part in (text or "").split():
        scope = parse_one(part)
        seen.setdefault(scope.uri.lower(), scope)
    return list(seen.values())


def resources(scopes: list[Scope]) -> list[str]:
    """The distinct resource URIs named, in order of first appearance."""
    out: list[str] = []
    for scope in scopes:
        if scope.resource and scope.resource not in out:
            out.append(scope.resource)
    return out


def resource_apps(scopes: list[Scope]) -> list[str]:
    """Distinct resource applications (Exchange's several URIs count as one)."""
    out: list[str] = []
    for scope in scopes:
        if scope.resource and scope.resource_app not in out:
            out.append(scope.resource_app)
    return out


def expand_default(scopes: list[Scope], app_permissions: list[str]) -> list[Scope]:
    """Replace ``<resource>/.default`` by the app's configured permissions on that resource."""
    out: list[Scope] = []
    for scope in scopes:
        if scope.name != ".default":
            out.append(scope)
            continue
        table = DELEGATED.get(scope.resource_app, {})
        out.extend(Scope(scope.resource, p) for p in app_permissions if p.lower() in table)
    return out
