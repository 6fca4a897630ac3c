"""Microsoft identity-platform endpoints, Outlook scopes, mail hosts per cloud, and XOAUTH2.

Facts come from research/microsoft.md §1.1 (endpoints), §1.6 (scopes), §1.13 (XOAUTH2) and
§4.1 (hosts per cloud). Everything here is data or a pure function: no I/O, so the oauth
service, the transports, the server form and the sandbox can all share one source of truth.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

ServerKind = Literal["outgoing", "incoming"]

#: Name of the system parameter that overrides the identity endpoint (the sandbox and
#: sovereign clouds set it); the value is a base URL that ends with "/".
ENDPOINT_PARAMETER = "microsoft_outlook.endpoint"

#: Global cloud, ``/common`` authority: works for multi-tenant and personal-account apps.
#: Single-tenant apps must use their tenant instead (AADSTS50194, catalogue E-07).
DEFAULT_ENDPOINT = "https://login.microsoftonline.com/common/oauth2/v2.0/"

#: OIDC scopes requested with every resource scope: ``offline_access`` for a refresh token,
#: ``openid profile`` for an ID token carrying ``preferred_username`` (pre-fills Username).
OIDC_SCOPES: tuple[str, ...] = ("offline_access", "openid", "profile")

#: Delegated Outlook permissions by server kind, without the resource prefix; the prefix
#: depends on the cloud. A bare name would resolve to Microsoft Graph and the mail servers
#: would reject the token (catalogue E-10), so never send these without a prefix.
OUTLOOK_PERMISSIONS: MappingProxyType[str, str] = MappingProxyType(
    {
        "outgoing": "SMTP.Send",
        "incoming": "IMAP.AccessAsUser.All",
    }
)

#: Scope for app-only (client-credentials) access to IMAP/POP/SMTP in the global cloud.
APP_ONLY_SCOPE = "https://outlook.office365.com/.default"

#: ``tid`` claim of personal Microsoft accounts (outlook.com, hotmail.com, live.com).
PERSONAL_ACCOUNT_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"


@dataclass(frozen=True)
class Cloud:
    """Hosts of one Microsoft cloud; tokens are never portable between clouds."""

    key: str
    label: str
    authority_host: str
    imap_host: str
    imap_port: int
    smtp_host: str
    smtp_port: int
    smtp_encryption: Literal["starttls", "ssl", "none"]
    scope_prefix: str
    graph_host: str
    #: False where research found the value only in third-party code, not in Microsoft's
    #: pages (§7); the server form can say "unverified" next to such defaults.
    documented: bool = True

    def endpoint(self, tenant: str = "common") -> str:
        """Return the v2.0 OAuth base URL (ending with "/") for ``tenant`` in this cloud."""
        return f"https://{self.authority_host}/{tenant}/oauth2/v2.0/"


# Table of §4.1. Exchange Online offers SMTP submission on 587 with STARTTLS only (465 is not
# offered), and IMAP on 993 with implicit TLS.
CLOUDS: MappingProxyType[str, Cloud] = MappingProxyType(
    {
        cloud.key: cloud
        for cloud in (
            Cloud(
                key="global",
                label="Microsoft 365 (worldwide, incl. GCC)",
                authority_host="login.microsoftonline.com",
                imap_host="outlook.office365.com",
                imap_port=993,
                smtp_host="smtp.office365.com",
                smtp_port=587,
                smtp_encryption="starttls",
                scope_prefix="https://outlook.office.com/",
                graph_host="graph.microsoft.com",
            ),
            Cloud(
                key="outlook_com",
                label="Outlook.com (personal Microsoft account)",
                authority_host="login.microsoftonline.com",
                imap_host="outlook.office365.com",
                imap_port=993,
                smtp_host="smtp-mail.outlook.com",
                smtp_port=587,
                smtp_encryption="starttls",
                scope_prefix="https://outlook.office.com/",
                graph_host="graph.microsoft.com",
            ),
            Cloud(
                key="gcc_high",
                label="US Government GCC High",
                authority_host="login.microsoftonline.us",
                imap_host="outlook.office365.us",
                imap_port=993,
                smtp_host="smtp.office365.us",
                smtp_port=587,
                smtp_encryption="starttls",
                scope_prefix="https://outlook.office365.us/",
                graph_host="graph.microsoft.us",
            ),
            Cloud(
                key="dod",
                label="US Government DoD",
                authority_host="login.microsoftonline.us",
                imap_host="outlook-dod.office365.us",
                imap_port=993,
                smtp_host="outlook-dod.office365.us",
                smtp_port=587,
                smtp_encryption="starttls",
                scope_prefix="https://outlook.office365.us/",
                graph_host="dod-graph.microsoft.us",
                documented=False,
            ),
            Cloud(
                key="china",
                label="Microsoft 365 operated by 21Vianet (China)",
                authority_host="login.partner.microsoftonline.cn",
                imap_host="partner.outlook.cn",
                imap_port=993,
                smtp_host="smtp.partner.outlook.cn",
                smtp_port=587,
                smtp_encryption="starttls",
                scope_prefix="https://partner.outlook.cn/",
                graph_host="microsoftgraph.chinacloudapi.cn",
                documented=False,
            ),
        )
    }
)

DEFAULT_CLOUD = "global"


def _base(endpoint: str) -> str:
    # Admins edit the system parameter by hand; a missing trailing "/" would otherwise make
    # the join drop the "v2.0" segment (URL join semantics) and hit a v1 endpoint.
    endpoint = endpoint.strip()
    if not endpoint:
        raise ValueError(f"{ENDPOINT_PARAMETER} is empty")
    return endpoint if endpoint.endswith("/") else endpoint + "/"


def authorize_url(endpoint: str = DEFAULT_ENDPOINT) -> str:
    """Return the ``/authorize`` URL under the configured endpoint base."""
    return _base(endpoint) + "authorize"


def token_url(endpoint: str = DEFAULT_ENDPOINT) -> str:
    """Return the ``/token`` URL under the configured endpoint base."""
    return _base(endpoint) + "token"


def resource_scope(kind: ServerKind, *, cloud: str = DEFAULT_CLOUD) -> str:
    """Return the Outlook resource scope alone, e.g. ``https://outlook.office.com/SMTP.Send``."""
    try:
        permission = OUTLOOK_PERMISSIONS[kind]
    except KeyError:
        raise ValueError(f"unknown server kind {kind!r}") from None
    return CLOUDS[cloud].scope_prefix + permission


def scope_for(kind: ServerKind, *, cloud: str = DEFAULT_CLOUD) -> str:
    """Return the space-separated scope to request for ``kind``: OIDC scopes + one resource.

    One resource per request: the token endpoint refuses scopes that span resources
    (AADSTS70011/28000, catalogue E-09), so outgoing and incoming are never combined.
    """
    return " ".join((*OIDC_SCOPES, resource_scope(kind, cloud=cloud)))


def xoauth2_string(user: str, token: str) -> str:
    """Return the SASL XOAUTH2 initial response before base64 (Microsoft's exact format)."""
    # A control character would let a crafted username inject a second SASL field.
    for name, value in (("user", user), ("token", token)):
        if not value:
            raise ValueError(f"XOAUTH2 {name} is empty")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            raise ValueError(f"XOAUTH2 {name} contains a control character")
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def xoauth2_b64(user: str, token: str) -> str:
    """Return the base64 XOAUTH2 initial response sent after ``AUTH``/``AUTHENTICATE``."""
    return base64.b64encode(xoauth2_string(user, token).encode("utf-8")).decode("ascii")
