"""SANDBOX ONLY: the simulated Microsoft 365 directory (tenants, apps, mailboxes).

Loaded from a small TOML file (``default.toml`` beside this module unless another is
given). The identity platform, the SMTP server and the IMAP front all read the same
:class:`World`, so a switch flipped here (SMTP AUTH off, SendAs removed) is seen by all.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_FILE = Path(__file__).with_name("default.toml")
#: The tenant id Microsoft uses for personal (MSA) accounts.
MSA_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"


@dataclass
class Tenant:
    id: str
    name: str
    domains: list[str]
    #: Exchange: Set-TransportConfig -SmtpClientAuthenticationDisabled
    smtp_auth_disabled: bool = False
    #: Entra: Consent and permissions → users may consent to apps
    users_may_consent: bool = True
    personal: bool = False


@dataclass
class Mailbox:
    upn: str
    password: str
    display_name: str
    tenant_id: str
    oid: str
    #: Per-mailbox Authenticated SMTP: None follows the tenant, True/False overrides.
    smtp_auth_enabled: bool | None = None
    imap_enabled: bool = True
    #: Addresses this mailbox may send as besides its own (Exchange SendAs).
    send_as: list[str] = field(default_factory=list)
    #: Mailboxes whose content this user may open over IMAP (FullAccess).
    full_access: list[str] = field(default_factory=list)
    mfa_required: bool = False
    #: Entra admin role: may grant tenant-wide ("admin") consent on the consent screen.
    is_admin: bool = False
    #: Client ids of apps whose Exchange service principal has FullAccess on this mailbox
    #: (Add-MailboxPermission -User <service principal>), for app-only XOAUTH2.
    app_full_access: list[str] = field(default_factory=list)


@dataclass
class App:
    client_id: str
    name: str
    home_tenant_id: str
    #: AzureADMyOrg | AzureADMultipleOrgs | AzureADandPersonalMicrosoftAccount
    sign_in_audience: str
    redirect_uris: list[str]
    #: (secret id, secret value, expiry date)
    secrets: list[tuple[str, str, dt.date]]
    permissions: list[str]
    public_client: bool = False
    #: Application permissions (app roles) on Office 365 Exchange Online, e.g. SMTP.SendAsApp.
    app_permissions: list[str] = field(default_factory=list)
    #: Scopes an admin granted tenant-wide in the home tenant, as full URIs or OIDC names
    #: (e.g. "https://outlook.office.com/SMTP.Send"); app roles as "<resource>/<role>".
    admin_consented: list[str] = field(default_factory=list)
    #: Exchange: New-ServicePrincipal was run for this app (needed for app-only XOAUTH2).
    exchange_service_principal: bool = False
    #: Enterprise application (service principal) object id in the home tenant.
    service_principal_id: str = ""


@dataclass
class World:
    tenants: dict[str, Tenant]
    mailboxes: dict[str, Mailbox]
    apps: dict[str, App]

    def mailbox(self, upn: str) -> Mailbox | None:
        return self.mailboxes.get(upn.lower())

    def tenant_of(self, mailbox: Mailbox) -> Tenant:
        return self.tenants[mailbox.tenant_id]

    def smtp_auth_allowed(self, mailbox: Mailbox) -> bool:
        if mailbox.smtp_auth_enabled is not None:
            return mailbox.smtp_auth_enabled
        return not self.tenant_of(mailbox).smtp_auth_disabled

    def may_send_as(self, mailbox: Mailbox, address: str) -> bool:
        address = address.lower()
        return address == mailbox.upn or address in {a.lower() for a in mailbox.send_as}

    def may_open(self, user: Mailbox, target_upn: str) -> bool:
        target = target_upn.lower()
        return target == user.upn or target in {a.lower() for a in user.full_access}

    def tenant(self, id_or_domain: str) -> Tenant | None:
        """A tenant by GUID or by one of its verified domains (case-insensitive)."""
        key = id_or_domain.lower()
        for tenant in self.tenants.values():
            if tenant.id.lower() == key or key in {d.lower() for d in tenant.domains}:
                return tenant
        return None

    def app_may_open(self, client_id: str, target_upn: str) -> bool:
        """App-only access: service principal registered in Exchange and FullAccess granted."""
        app = self.apps.get(client_id)
        target = self.mailbox(target_upn)
        return (
            app is not None
            and app.exchange_service_principal
            and target is not None
            and client_id in target.app_full_access
        )


def load(path: Path | None = None) -> World:
    """Read a world from TOML (the default sandbox world when ``path`` is None)."""
    data = tomllib.loads((path or DEFAULT_FILE).read_text())
    tenants = {t["id"]: Tenant(**t) for t in data.get("tenants", [])}
    mailboxes: dict[str, Mailbox] = {}
    for m in data.get("mailboxes", []):
        m = dict(m)
        m["upn"] = m["upn"].lower()
        mailboxes[m["upn"]] = Mailbox(**m)
    apps: dict[str, App] = {}
    for a in data.get("apps", []):
        a = dict(a)
        a["secrets"] = [
            (s["id"], s["value"], dt.date.fromisoformat(s["expires"])) for s in a["secrets"]
        ]
        apps[a["client_id"]] = App(**a)
    return World(tenants=tenants, mailboxes=mailboxes, apps=apps)
