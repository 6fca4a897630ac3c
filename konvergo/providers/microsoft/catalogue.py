"""The Microsoft failure catalogue as data: what Microsoft said, why, who acts, and where.

Every observable entry of research/microsoft.md §5 (E-01…E-37) is one row of ``CATALOGUE``.
A row carries *matchers* (AADSTS codes, identity-page texts, SMTP replies, IMAP replies,
Graph error codes) and the advice shown on every surface: the confirm page, Test Connection,
the outbox, the server form and the CLI. Lookup indexes are built from the rows once at
import, so adding a Microsoft error means adding a row, never a branch.

Research entries that mix different owners or different queue behaviour are split into
lettered rows ("E-15a" MFA → the user reconnects, "E-15b" Conditional Access → the tenant
admin must change a policy); ``Entry.ref`` gives back the research id ("E-15").

Microsoft warns that error texts change ("Error codes are subject to change at any time"),
so identity errors match on the numeric AADSTS code and SMTP replies on the enhanced status
code, with a short, stable part of the text only where one code has several meanings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, TypeAlias, TypedDict

Surface = Literal["authorize", "token", "smtp", "imap", "graph", "any"]
FailureClass = Literal["authorization", "configuration", "temporary", "permanent"]
Actor = Literal[
    "app registration admin", "tenant admin", "mailbox user", "Konvergo administrator", "wait"
]

#: What each failure class makes the product do; shown next to the class in the UI and docs.
FAILURE_CLASS_MEANING: Mapping[str, str] = MappingProxyType(
    {
        "authorization": "Mail is held until the mailbox is connected again.",
        "configuration": "Mail is held until an administrator changes a setting.",
        "temporary": "Konvergo retries automatically with increasing delays.",
        "permanent": "This message failed; retrying it will not help.",
    }
)


# --- matchers: pure data, one class per place Microsoft reports an error --------------------


@dataclass(frozen=True)
class Aadsts:
    """An Entra ID error code (``AADSTS<code>``) from a sign-in page, the callback or /token."""

    code: int


@dataclass(frozen=True)
class IdentityText:
    """Identity-platform text that carries no AADSTS code (e.g. the "Need admin approval" page)."""

    pattern: str


@dataclass(frozen=True)
class SmtpReply:
    """An SMTP reply by enhanced status code, optionally narrowed by basic code and text.

    The text pattern is needed only where Exchange reuses one enhanced code for several
    causes (5.7.139 has four texts; 5.2.0 means "send as denied" or "quota exceeded").
    """

    enhanced: str
    text: str = ""
    code: int | None = None


@dataclass(frozen=True)
class ImapReply:
    """An IMAP tagged or untagged reply, as a regular expression over the server's line."""

    pattern: str


@dataclass(frozen=True)
class GraphError:
    """A Microsoft Graph ``error.code`` value (or the HTTP status that stands for it)."""

    code: str


Matcher: TypeAlias = Aadsts | IdentityText | SmtpReply | ImapReply | GraphError

#: Which ``explain(surface=...)`` values consult which kind of matcher.
MATCHER_SURFACES: Mapping[type, frozenset[str]] = MappingProxyType(
    {
        Aadsts: frozenset({"authorize", "token"}),
        IdentityText: frozenset({"authorize", "token"}),
        SmtpReply: frozenset({"smtp"}),
        ImapReply: frozenset({"imap"}),
        GraphError: frozenset({"graph"}),
    }
)


@dataclass(frozen=True)
class Entry:
    """One row of the catalogue: a Microsoft failure and the advice for it."""

    id: str
    title: str
    matchers: tuple[Matcher, ...]
    cause: str
    who_must_act: Actor
    fix: str
    failure_class: FailureClass
    doc_url: str = ""

    @property
    def ref(self) -> str:
        """The research id this row comes from ("E-15b" → "E-15")."""
        return self.id.rstrip("abcdefghijklmnopqrstuvwxyz")


# --- portal paths used in several rows (one spelling everywhere) ---------------------------

_APP = "Microsoft Entra admin center (entra.microsoft.com) → App registrations → <app>"
_KONVERGO_SERVER = (
    "Konvergo → Settings → General Settings → Custom Email Servers → "
    "Outgoing Email Servers (or Incoming Mail Servers) → <server>"
)
_RECONNECT = f"{_KONVERGO_SERVER} → Connect your Outlook account, signed in as the mailbox <user>"
_EMAIL_APPS = (
    "Microsoft 365 admin center (admin.microsoft.com) → Users → Active users → <user> → "
    "Mail → Manage email apps"
)
_SIGN_IN_LOGS = (
    "Microsoft Entra admin center → Monitoring & health → Sign-in logs "
    '(filter on the error code; read "Failure reason")'
)
_EAC_MAILBOX = (
    "Exchange admin center (admin.exchange.microsoft.com) → Recipients → Mailboxes → <mailbox>"
)

CATALOGUE: tuple[Entry, ...] = (
    # --- A. App registration and configuration ---------------------------------------------
    Entry(
        id="E-01",
        title="The redirect URI is not registered for the Microsoft app",
        matchers=(Aadsts(50011),),
        cause=(
            "The redirect URI Konvergo sends (<web.base.url>/microsoft_outlook/confirm) does not "
            "exactly match one registered on the app: scheme (http behind a TLS proxy), host, "
            "port, path case or trailing slash differ, or it was registered under the SPA or "
            "Mobile platform instead of Web."
        ),
        who_must_act="app registration admin",
        fix=(
            f"{_APP} → Authentication → Web → Redirect URIs → add exactly "
            "<web.base.url>/microsoft_outlook/confirm; if the scheme or host is wrong, correct "
            "web.base.url in Konvergo → Settings → Technical → Parameters → System Parameters."
        ),
        failure_class="configuration",
        doc_url="https://aka.ms/redirectUriMismatchError",
    ),
    Entry(
        id="E-02",
        title="The redirect URI changed between sign-in and token redemption",
        matchers=(Aadsts(500112),),
        cause=(
            "The redirect URI sent to /token differs from the one sent to /authorize, typically "
            "http vs https or a different host when web.base.url changed or a proxy rewrote it."
        ),
        who_must_act="Konvergo administrator",
        fix=(
            "Konvergo → Settings → Technical → Parameters → System Parameters → web.base.url: set "
            "the one public https URL, then Connect your Outlook account again."
        ),
        failure_class="configuration",
    ),
    Entry(
        id="E-03",
        title="Microsoft does not know this Client ID in this tenant",
        matchers=(Aadsts(700016),),
        cause=(
            "The Client ID is mistyped, is the secret or an email address, the app is "
            "single-tenant and the user belongs to another tenant, or the app lives in another "
            "Microsoft cloud."
        ),
        who_must_act="app registration admin",
        fix=(
            f'{_APP} → Overview → copy "Application (client) ID" into Konvergo → Settings → '
            "General Settings → Outlook Credentials → Client ID; if users of other tenants "
            "connect, set Authentication → Supported account types to multi-tenant."
        ),
        failure_class="configuration",
    ),
    Entry(
        id="E-04",
        title="Microsoft rejected the Client Secret",
        matchers=(Aadsts(7000215),),
        cause=(
            "The Client Secret is wrong: the secret's ID was copied instead of its Value, it "
            "belongs to another app, or it was created seconds ago and has not propagated yet."
        ),
        who_must_act="app registration admin",
        fix=(
            f"{_APP} → Certificates & secrets → New client secret → copy the Value (shown only "
            "once) into Konvergo → Settings → General Settings → Outlook Credentials → "
            "Client Secret."
        ),
        failure_class="configuration",
        doc_url="https://aka.ms/NewClientSecret",
    ),
    Entry(
        id="E-05",
        title="The Client Secret has expired",
        matchers=(Aadsts(7000222),),
        cause=(
            "Client secrets expire after at most 24 months; every mailbox connected through "
            "this app stops at once."
        ),
        who_must_act="app registration admin",
        fix=(
            f"{_APP} → Certificates & secrets → New client secret → copy the Value into "
            "Konvergo → Settings → General Settings → Outlook Credentials → Client Secret; "
            "delete the expired secret afterwards."
        ),
        failure_class="configuration",
        doc_url="https://aka.ms/NewClientSecret",
    ),
    Entry(
        id="E-06",
        title="The Microsoft app is registered as a public client",
        matchers=(Aadsts(7000218), Aadsts(700025)),
        cause=(
            'The redirect URI is registered under "Mobile and desktop applications" or public '
            "client flows are allowed, so Microsoft expects no secret (or demands one Konvergo "
            "did not send)."
        ),
        who_must_act="app registration admin",
        fix=(
            f"{_APP} → Authentication → register the redirect URI under the Web platform and set "
            '"Allow public client flows" to No; make sure Konvergo → Settings → General '
            "Settings → Outlook Credentials → Client Secret is filled in."
        ),
        failure_class="configuration",
    ),
    Entry(
        id="E-07",
        title="A single-tenant app cannot sign in through /common",
        matchers=(Aadsts(50194),),
        cause=(
            "The app registration allows only its own directory, and Konvergo uses the /common "
            "endpoint, which Microsoft refuses for such apps created after 2018-10-15."
        ),
        who_must_act="Konvergo administrator",
        fix=(
            "Konvergo → Settings → Technical → Parameters → System Parameters → "
            'microsoft_outlook.endpoint: replace "common" with the Directory (tenant) ID from '
            f"{_APP} → Overview; or change {_APP} → Authentication → Supported account types "
            "to multi-tenant."
        ),
        failure_class="configuration",
    ),
    Entry(
        id="E-08a",
        title="Signed in with an account this app does not accept",
        matchers=(Aadsts(50020), Aadsts(90072)),
        cause=(
            "The account used at Microsoft is a personal account or belongs to another tenant, "
            "often because the browser was already signed in with a different account."
        ),
        who_must_act="mailbox user",
        fix=(
            f'{_RECONNECT} (choose "Use another account" at Microsoft); to accept such '
            f"accounts, change {_APP} → Authentication → Supported account types."
        ),
        failure_class="authorization",
    ),
    Entry(
        id="E-08b",
        title="The app does not accept personal Microsoft accounts",
        matchers=(
            Aadsts(9002332),
            IdentityText(r"not enabled for consumers"),
        ),
        cause=(
            "A personal Microsoft account (outlook.com, hotmail.com, live.com) tried to sign in, "
            "or the /consumers endpoint is used, with an app registered for organizational "
            "accounts only."
        ),
        who_must_act="app registration admin",
        fix=(
            f'{_APP} → Authentication → Supported account types → "Accounts in any '
            'organizational directory and personal Microsoft accounts"; keep '
            "microsoft_outlook.endpoint on /common."
        ),
        failure_class="configuration",
    ),
    Entry(
        id="E-09",
        title="Konvergo requested invalid or mixed scopes",
        matchers=(Aadsts(70011), Aadsts(28000), Aadsts(28003)),
        cause=(
            "The token request named scopes of more than one resource (Graph and Outlook), "
            "comma-separated scopes, or no scope. Konvergo requests one Outlook resource per "
            "token; this points to a modified installation."
        ),
        who_must_act="Konvergo administrator",
        fix=(
            "Konvergo → Settings → Technical → Parameters → System Parameters: remove custom "
            "scope overrides so each server requests https://outlook.office.com/SMTP.Send or "
            "https://outlook.office.com/IMAP.AccessAsUser.All alone; then report it to Konvergo "
            "support with the Trace ID."
        ),
        failure_class="configuration",
    ),
    # E-10 (token for the wrong resource) has no text of its own: Exchange answers with the
    # E-23 / E-33 texts, whose causes list it first.
    # --- B. Consent and tenant policy ------------------------------------------------------
    Entry(
        id="E-11",
        title="The permissions were never consented or the consent was withdrawn",
        matchers=(Aadsts(65001),),
        cause=(
            "Konvergo asked for a permission nobody consented to: the consent was revoked by "
            "an administrator, a permission was removed from the app, or the requested scopes "
            "changed since the mailbox was connected."
        ),
        who_must_act="tenant admin",
        fix=(f"{_APP} → API permissions → Grant admin consent for <tenant>; then {_RECONNECT}."),
        failure_class="authorization",
    ),
    Entry(
        id="E-12",
        title="Only an administrator may consent to this app",
        matchers=(
            Aadsts(90094),
            IdentityText(r"Need admin approval"),
            IdentityText(r"needs permission to access resources in your organization that only"),
        ),
        cause=(
            "The tenant does not let users consent to apps (common in enterprises and "
            "universities), so the mailbox user cannot approve Konvergo's permissions."
        ),
        who_must_act="tenant admin",
        fix=(
            f"{_APP} → API permissions → Grant admin consent for <tenant> (or Enterprise "
            "applications → Admin consent requests → approve); then the mailbox user connects "
            "again. Do not connect with the admin's own account: Konvergo would store the "
            "admin's token for the mailbox."
        ),
        failure_class="configuration",
    ),
    Entry(
        id="E-13",
        title="The permission request was declined at Microsoft",
        matchers=(Aadsts(65004),),
        cause="The user clicked Cancel instead of Yes (Accept) on Microsoft's permission page.",
        who_must_act="mailbox user",
        fix=(
            f'{_RECONNECT} and click Yes (Accept): Konvergo needs "Send mail" (SMTP.Send) for '
            'outgoing and "Read and write mail" (IMAP.AccessAsUser.All) for incoming servers.'
        ),
        failure_class="authorization",
    ),
    Entry(
        id="E-14",
        title="The tenant or user has no Exchange Online",
        matchers=(Aadsts(650052), Aadsts(500011)),
        cause=(
            "The organization has no Exchange Online subscription (the Office 365 Exchange "
            "Online service is missing), the user has no mailbox licence, or the sign-in went "
            "to the wrong tenant or cloud."
        ),
        who_must_act="tenant admin",
        fix=(
            "Microsoft 365 admin center (admin.microsoft.com) → Users → Active users → <user> → "
            "Licenses and apps → assign a licence that includes Exchange Online; otherwise "
            "check the tenant in microsoft_outlook.endpoint."
        ),
        failure_class="configuration",
    ),
    Entry(
        id="E-15a",
        title="Microsoft now requires multi-factor sign-in",
        matchers=(Aadsts(50076), Aadsts(50079)),
        cause=(
            "MFA was enforced after the mailbox was connected, or the sign-in came from a new "
            "location (Konvergo's server), so the stored grant no longer suffices."
        ),
        who_must_act="mailbox user",
        fix=(
            f"{_RECONNECT} and complete the MFA prompt; if it keeps coming back, the tenant "
            f"admin checks {_SIGN_IN_LOGS} → Conditional Access tab."
        ),
        failure_class="authorization",
    ),
    Entry(
        id="E-15b",
        title="Conditional Access or security defaults block the sign-in",
        matchers=(Aadsts(53003), Aadsts(530035)),
        cause=(
            "A Conditional Access policy (device compliance, location) or the tenant's security "
            "defaults block this sign-in; a server can never satisfy device or location rules, "
            "so reconnecting alone will not help."
        ),
        who_must_act="tenant admin",
        fix=(
            "Microsoft Entra admin center → Protection → Conditional Access → exclude the app "
            "or the mailbox from the blocking policy (see the failed sign-in in "
            f"{_SIGN_IN_LOGS} → Conditional Access tab); security defaults: Microsoft Entra "
            "admin center → Overview → Properties → Manage security defaults."
        ),
        failure_class="configuration",
    ),
    # --- C. Token lifecycle ----------------------------------------------------------------
    Entry(
        id="E-16",
        title="The sign-in expired or was used twice",
        matchers=(Aadsts(70008), Aadsts(54005), Aadsts(501481)),
        cause=(
            "The authorization code was older than about 10 minutes, was redeemed twice "
            "(double click, browser retry), or the PKCE verifier did not match (the sign-in "
            "started in another session)."
        ),
        who_must_act="mailbox user",
        fix=f"{_RECONNECT}, once, in a single browser tab, and finish within 10 minutes.",
        failure_class="authorization",
    ),
    Entry(
        id="E-17",
        title="The connection expired after 90 days without use",
        matchers=(Aadsts(700082),),
        cause=(
            "Microsoft refresh tokens expire after 90 days of inactivity; the mailbox was not "
            "used for that long (Konvergo stores every rotated token and refreshes idle ones)."
        ),
        who_must_act="mailbox user",
        fix=f"{_RECONNECT}.",
        failure_class="authorization",
    ),
    Entry(
        id="E-18a",
        title="Microsoft revoked the connection",
        matchers=(Aadsts(50173), Aadsts(70043)),
        cause=(
            "The user's password was changed or reset, an administrator used \"Revoke "
            'sessions", or Conditional Access sign-in frequency requires a fresh sign-in.'
        ),
        who_must_act="mailbox user",
        fix=(
            f"{_RECONNECT}; for repeated AADSTS70043 the tenant admin reviews the sign-in "
            "frequency in Microsoft Entra admin center → Protection → Conditional Access."
        ),
        failure_class="authorization",
    ),
    Entry(
        id="E-18b",
        title="The app's tokens live only 24 hours",
        matchers=(Aadsts(700084), Aadsts(700081)),
        cause=(
            "The redirect URI is registered as a single-page application (SPA), so Microsoft "
            "caps the refresh token at 24 hours."
        ),
        who_must_act="app registration admin",
        fix=(
            f'{_APP} → Authentication → remove the URI from "Single-page application" and add '
            f"it under Web; then {_RECONNECT}."
        ),
        failure_class="configuration",
    ),
    Entry(
        id="E-19a",
        title="Microsoft did not accept the user's password",
        matchers=(Aadsts(50126), Aadsts(50055)),
        cause="The password typed at Microsoft was wrong, or it has expired.",
        who_must_act="mailbox user",
        fix=(
            f"Change the password at https://mysignins.microsoft.com (or ask the tenant admin: "
            f"Microsoft Entra admin center → Users → <user> → Reset password); then {_RECONNECT}."
        ),
        failure_class="authorization",
    ),
    Entry(
        id="E-19b",
        title="The Microsoft account is locked or disabled",
        matchers=(Aadsts(50053), Aadsts(50057)),
        cause=(
            "The account is locked after too many attempts (or sign-ins from a malicious IP), "
            "or an administrator disabled it."
        ),
        who_must_act="tenant admin",
        fix=(
            "Microsoft Entra admin center → Users → <user> → Edit properties → Settings → "
            f"Account enabled (and unlock); see {_SIGN_IN_LOGS}; then the user connects again."
        ),
        failure_class="configuration",
    ),
    # --- D. SMTP AUTH --------------------------------------------------------------------
    Entry(
        id="E-20",
        title="SMTP AUTH is turned off for the tenant",
        matchers=(SmtpReply("5.7.139", r"SmtpClientAuthentication is disabled"),),
        cause=(
            "Exchange Online's SMTP AUTH switch is off organization-wide (the default for "
            "tenants created since 2020) and not enabled for this mailbox; the token is fine "
            "and IMAP still works."
        ),
        who_must_act="tenant admin",
        fix=(
            f"{_EMAIL_APPS} → check Authenticated SMTP (per mailbox, preferred; "
            "Set-CASMailbox <mailbox> -SmtpClientAuthenticationDisabled $false); or Exchange "
            "admin center (admin.exchange.microsoft.com) → Settings → Mail flow → uncheck "
            '"Turn off SMTP AUTH protocol for your organization". Allow about 15 minutes.'
        ),
        failure_class="configuration",
        doc_url="https://aka.ms/smtp_auth_disabled",
    ),
    Entry(
        id="E-21a",
        title="SMTP AUTH is not allowed for this mailbox",
        matchers=(SmtpReply("5.7.139", r"did not meet the criteria to be authenticated"),),
        cause=(
            "Authenticated SMTP is off for this mailbox, or an authentication policy or "
            "Conditional Access rule refuses SMTP AUTH for it."
        ),
        who_must_act="tenant admin",
        fix=f"{_EMAIL_APPS} → check Authenticated SMTP; allow about 15 minutes.",
        failure_class="configuration",
        doc_url="https://aka.ms/smtp_auth_disabled",
    ),
    Entry(
        id="E-21b",
        title="Security defaults block SMTP AUTH",
        matchers=(SmtpReply("5.7.139", r"security defaults"),),
        cause=(
            "The tenant has security defaults enabled, which disable SMTP AUTH in Exchange "
            "Online regardless of the mailbox switch."
        ),
        who_must_act="tenant admin",
        fix=(
            "Microsoft Entra admin center → Overview → Properties → Manage security defaults "
            "(replacing them by Conditional Access policies is a security decision); then "
            f"{_EMAIL_APPS} → check Authenticated SMTP."
        ),
        failure_class="configuration",
    ),
    Entry(
        id="E-22",
        title="The server sent a password instead of an Outlook token",
        matchers=(
            SmtpReply("5.7.139", r"basic authentication is disabled"),
            SmtpReply("5.7.30", r"Basic authentication is not supported"),
        ),
        cause=(
            "The outgoing server authenticates with a username and password (or app password), "
            "which Microsoft no longer accepts; only OAuth (XOAUTH2) is."
        ),
        who_must_act="Konvergo administrator",
        fix=(
            f"{_KONVERGO_SERVER} → check Outlook (OAuth authentication) instead of a password → "
            "Connect your Outlook account."
        ),
        failure_class="configuration",
    ),
    Entry(
        id="E-23",
        title="Exchange rejected the Outlook token for SMTP",
        matchers=(SmtpReply("5.7.3", r"Authentication unsuccessful"),),
        cause=(
            "Exchange does not say which check failed. In order of likelihood: the token was "
            "issued for the wrong resource or without SMTP.Send (E-10); the mailbox in Username "
            "is not the account that signed in and it has no rights on it; the token expired; "
            "Authenticated SMTP is off for the mailbox; for app-only access the Exchange "
            "service principal or mailbox permission is missing."
        ),
        who_must_act="mailbox user",
        fix=(
            f"{_RECONNECT} (Username must be that mailbox); if it persists, the tenant admin: "
            f"{_EMAIL_APPS} → check Authenticated SMTP, and {_APP} → API permissions → confirm "
            "SMTP.Send is granted."
        ),
        failure_class="authorization",
    ),
    Entry(
        id="E-24",
        title="Konvergo sent mail without authenticating",
        matchers=(SmtpReply("5.7.57", r"Client not authenticated"),),
        cause=(
            "The SMTP session reached MAIL FROM without a successful AUTH, or without STARTTLS; "
            "the outgoing server is not set to Outlook authentication over STARTTLS."
        ),
        who_must_act="Konvergo administrator",
        fix=(
            f"{_KONVERGO_SERVER} → Connection encryption: TLS (STARTTLS), port 587, check "
            "Outlook, then Test Connection."
        ),
        failure_class="configuration",
    ),
    Entry(
        id="E-25",
        title="This mailbox may not send as that From address",
        matchers=(
            SmtpReply("5.2.0", r"SendAsDenied"),
            SmtpReply("5.2.252", r"SendAsDenied;"),
            SmtpReply("5.7.60", r"permissions to send as this sender"),
        ),
        cause=(
            "The From header or envelope sender differs from the authenticated mailbox and it "
            "has no Send As right on that address (shared mailbox, alias, no-reply address). "
            "Retrying makes Exchange throttle the mailbox (E-26)."
        ),
        who_must_act="tenant admin",
        fix=(
            f"{_EAC_MAILBOX} (the From address) → Delegation → Send as → add <user> "
            "(Add-RecipientPermission <from> -Trustee <user> -AccessRights SendAs); or in "
            f"{_KONVERGO_SERVER} → From Filter send only addresses this mailbox owns."
        ),
        failure_class="configuration",
    ),
    Entry(
        id="E-26",
        title="Exchange paused SMTP for this mailbox after repeated errors",
        matchers=(SmtpReply("5.2.251"), SmtpReply("5.2.252", r"Sender throttled")),
        cause=(
            "The mailbox kept producing the same permanent error (mailbox full, send as denied, "
            "invalid licence, too many or invalid recipients), so Exchange bars it from SMTP "
            "AUTH for a while."
        ),
        who_must_act="wait",
        fix=(
            "Wait; Exchange lifts the block by itself. Fix the repeated error first (see the "
            "failed messages in Konvergo → Outbox); Exchange admin center "
            "(admin.exchange.microsoft.com) → Reports → Mail flow → SMTP AUTH clients shows "
            "the traffic."
        ),
        failure_class="temporary",
        doc_url=(
            "https://learn.microsoft.com/en-us/Exchange/mail-flow-best-practices/"
            "continuous-error-throttling-smtp-auth-submissions"
        ),
    ),
    Entry(
        id="E-27",
        title="Too many simultaneous SMTP sessions for this mailbox",
        matchers=(SmtpReply("4.3.2"),),
        cause=(
            "Exchange allows 3 concurrent SMTP AUTH sessions per mailbox; other workers or "
            "other applications using the same mailbox hold the rest."
        ),
        who_must_act="wait",
        fix=(
            "Nothing to change: Konvergo retries with backoff. If it persists, stop other "
            "applications that send through this mailbox (Exchange admin center → Reports → "
            "Mail flow → SMTP AUTH clients)."
        ),
        failure_class="temporary",
        doc_url=(
            "https://learn.microsoft.com/en-us/exchange/troubleshoot/send-emails/"
            "smtp-submission-improvements"
        ),
    ),
    Entry(
        id="E-28",
        title="The mailbox reached its daily recipient limit",
        matchers=(
            SmtpReply("5.2.0", r"SubmissionQuotaExceeded"),
            SmtpReply("5.1.90", r"daily limit for message recipients"),
        ),
        cause=(
            "More than 10,000 recipients in the last 24 hours (or the outbound spam policy's "
            "lower limit); the block lifts by itself within 24 hours."
        ),
        who_must_act="wait",
        fix=(
            "Wait up to 24 hours; Konvergo resumes sending. To check or raise the limit: "
            "Microsoft Defender portal → Policies & rules → Threat policies → Anti-spam → "
            "Outbound spam policy."
        ),
        failure_class="temporary",
    ),
    Entry(
        id="E-29",
        title="The mailbox is full (Sent Items)",
        matchers=(SmtpReply("5.2.2", r"mailbox full|QuotaExceeded"),),
        cause=(
            "Exchange saves a copy of every SMTP-submitted message in Sent Items; the mailbox "
            "reached its quota and cannot submit more."
        ),
        who_must_act="mailbox user",
        fix=(
            "Empty or archive Sent Items in Outlook; the tenant admin can add a retention policy "
            "in Microsoft Purview portal → Data lifecycle management → Retention policies."
        ),
        failure_class="configuration",
    ),
    Entry(
        id="E-30",
        title="The app may not open this mailbox",
        matchers=(SmtpReply("4.2.0", r"mailbox logon failure"),),
        cause=(
            "With app-only access the token is accepted, but the app's Exchange service "
            "principal has no FullAccess (or RBAC scope) on this mailbox."
        ),
        who_must_act="tenant admin",
        fix=(
            "Exchange Online PowerShell: Add-MailboxPermission -Identity <mailbox> -User "
            "<service principal id> -AccessRights FullAccess (or an RBAC for Applications "
            f"scope); or {_EAC_MAILBOX} → Delegation → Read and manage."
        ),
        failure_class="configuration",
    ),
    Entry(
        id="E-31",
        title="The connection used TLS 1.0 or 1.1",
        matchers=(SmtpReply("4.7.66", r"TLS 1\.0 and 1\.1"),),
        cause="Exchange Online accepts only TLS 1.2 or newer for SMTP AUTH.",
        who_must_act="Konvergo administrator",
        fix=(
            "Run Konvergo with an OpenSSL that offers TLS 1.2+ and remove any minimum-TLS "
            f"override; {_KONVERGO_SERVER} → Connection encryption: TLS (STARTTLS)."
        ),
        failure_class="configuration",
        doc_url="https://aka.ms/smtp_auth_tls",
    ),
    Entry(
        id="E-32",
        title="Microsoft blocked outbound mail from this sender or tenant",
        matchers=(
            SmtpReply("5.7.708"),
            SmtpReply("5.7.705"),
            SmtpReply("5.1.8", r"bad outbound sender"),
        ),
        cause=(
            "Microsoft's outbound spam protection restricted the user (often after a "
            "compromise) or the whole tenant (new or trial tenants, bulk sending)."
        ),
        who_must_act="tenant admin",
        fix=(
            "Microsoft Defender portal (security.microsoft.com) → Email & collaboration → "
            "Review → Restricted entities → release the user after securing the account; "
            "tenant-wide blocks need a Microsoft support request."
        ),
        failure_class="configuration",
        doc_url=(
            "https://learn.microsoft.com/en-us/Exchange/mail-flow-best-practices/"
            "non-delivery-reports-in-exchange-online/fix-error-code-5-7-700-through-5-7-750"
        ),
    ),
    # --- E. IMAP -------------------------------------------------------------------------
    Entry(
        id="E-33",
        title="Exchange rejected the Outlook token for IMAP",
        matchers=(ImapReply(r"\bNO AUTHENTICATE failed"),),
        cause=(
            "The token expired, was issued for the wrong resource (E-10), or the Username is "
            "not the signed-in mailbox; or IMAP is disabled for the mailbox (Outlook.com: off "
            "by default); or, with app-only access, the Exchange service principal is missing."
        ),
        who_must_act="mailbox user",
        fix=(
            f"{_RECONNECT}; if it persists, the tenant admin: {_EMAIL_APPS} → check IMAP "
            "(Set-CASMailbox <mailbox> -ImapEnabled $true); Outlook.com users: Outlook.com → "
            "Settings → Mail → Forwarding and IMAP → let devices and apps use IMAP."
        ),
        failure_class="authorization",
    ),
    Entry(
        id="E-34",
        title="Signed in, but this identity may not open the mailbox",
        matchers=(ImapReply(r"\bBAD User is authenticated but not connected"),),
        cause=(
            "The token is valid but belongs to another user (often the admin who consented) or "
            "to an app without FullAccess on the mailbox in Username (shared mailbox); rarely "
            "a burst of reconnects."
        ),
        who_must_act="mailbox user",
        fix=(
            f"{_RECONNECT} (not with an admin account); for a shared mailbox the tenant admin "
            f"grants {_EAC_MAILBOX} → Delegation → Read and manage to <user>."
        ),
        failure_class="authorization",
    ),
    Entry(
        id="E-35",
        title="The IMAP session ended when its token expired",
        matchers=(ImapReply(r"\bBYE Session invalidated - AccessTokenExpired"),),
        cause="Exchange ends IMAP sessions when the access token they started with expires.",
        who_must_act="wait",
        fix=(
            "Nothing to change: Konvergo reconnects with a fresh token. If it repeats, check "
            f"{_KONVERGO_SERVER} → Test and Confirm."
        ),
        failure_class="temporary",
    ),
    Entry(
        id="E-36",
        title="Exchange is throttling IMAP for this mailbox",
        matchers=(ImapReply(r"\bBAD Request is throttled"),),
        cause=(
            "Too many IMAP requests or connections for this mailbox (other applications "
            "count too); Exchange names a backoff time."
        ),
        who_must_act="wait",
        fix=(
            "Nothing to change: Konvergo waits the suggested backoff time. If it persists, "
            f"lower the fetch frequency in {_KONVERGO_SERVER} or stop other IMAP clients."
        ),
        failure_class="temporary",
    ),
    # --- F. Graph (kept as data for the Graph transport; not used by SMTP/IMAP) -----------
    Entry(
        id="E-37a",
        title="Graph: this mailbox may not send as that From address",
        matchers=(GraphError("ErrorSendAsDenied"),),
        cause="The From address is not the mailbox and it has no Send As right on it.",
        who_must_act="tenant admin",
        fix=f"{_EAC_MAILBOX} (the From address) → Delegation → Send as → add <user>.",
        failure_class="configuration",
    ),
    Entry(
        id="E-37b",
        title="Graph: access denied",
        matchers=(GraphError("ErrorAccessDenied"),),
        cause=(
            "Mail.Send / Mail.Read was not consented, or an application access policy / RBAC "
            "for Applications excludes this mailbox."
        ),
        who_must_act="tenant admin",
        fix=f"{_APP} → API permissions → Grant admin consent for <tenant>.",
        failure_class="configuration",
    ),
    Entry(
        id="E-37c",
        title="Graph: the user has no Exchange Online mailbox",
        matchers=(GraphError("ErrorMailboxNotEnabledForRESTAPI"),),
        cause="The user has no Exchange Online mailbox or no licence that includes one.",
        who_must_act="tenant admin",
        fix=(
            "Microsoft 365 admin center (admin.microsoft.com) → Users → Active users → <user> → "
            "Licenses and apps → assign a licence that includes Exchange Online."
        ),
        failure_class="configuration",
    ),
    Entry(
        id="E-37d",
        title="Graph: the message is too large",
        matchers=(GraphError("ErrorMessageSizeExceeded"), GraphError("413")),
        cause="The request exceeds Graph's size limit (about 4 MB per request).",
        who_must_act="Konvergo administrator",
        fix=(
            "Send large attachments through an upload session (3 to 150 MB), or reduce the "
            f"message size; the outgoing server is {_KONVERGO_SERVER}."
        ),
        failure_class="permanent",
    ),
    Entry(
        id="E-37e",
        title="Graph: the MIME content is not valid base64",
        matchers=(GraphError("ErrorMimeContentInvalidBase64String"),),
        cause="Konvergo sent a MIME body Graph could not decode; this is a Konvergo defect.",
        who_must_act="Konvergo administrator",
        fix="Report it to Konvergo support with the message from Konvergo → Outbox.",
        failure_class="permanent",
    ),
    Entry(
        id="E-37f",
        title="Graph: too many requests",
        matchers=(GraphError("TooManyRequests"), GraphError("429")),
        cause="Graph allows 4 concurrent requests and 10,000 per 10 minutes per mailbox.",
        who_must_act="wait",
        fix=(
            "Nothing to change: Konvergo waits for Retry-After and resumes; Konvergo → Outbox "
            "shows when."
        ),
        failure_class="temporary",
    ),
)


# --- extracted details ---------------------------------------------------------------------


@dataclass(frozen=True)
class Explanation:
    """A catalogue entry applied to one concrete failure, with what Microsoft told us."""

    entry: Entry
    raw: str
    surface: Surface
    aadsts: int | None = None
    smtp_code: int | None = None
    enhanced_code: str | None = None
    imap_status: str | None = None
    graph_code: str | None = None
    trace_id: str | None = None
    correlation_id: str | None = None
    timestamp: str | None = None
    server: str | None = None

    @property
    def failure_class(self) -> FailureClass:
        """The queue behaviour of the entry."""
        return self.entry.failure_class

    @property
    def message(self) -> str:
        """Microsoft's own words, without the Trace ID / Correlation ID / Timestamp suffix."""
        return _SUFFIX_RE.split(self.raw, maxsplit=1)[0].strip()

    def references(self) -> list[str]:
        """Identifiers Microsoft support asks for, in the order they should be quoted."""
        refs = [self.entry.id]
        if self.aadsts is not None:
            refs.append(f"AADSTS{self.aadsts}")
        if self.smtp_code is not None or self.enhanced_code:
            refs.append(" ".join(str(p) for p in (self.smtp_code, self.enhanced_code) if p))
        if self.graph_code:
            refs.append(self.graph_code)
        for label, value in (
            ("Trace ID", self.trace_id),
            ("Correlation ID", self.correlation_id),
            ("Server", self.server),
            ("Timestamp", self.timestamp),
        ):
            if value:
                refs.append(f"{label}: {value}")
        return refs

    def summary(self) -> str:
        """Multi-line advice for the UI and the CLI: title, cause, who acts, fix, raw text."""
        entry = self.entry
        lines = [
            f"{entry.title}.",
            f"Cause: {entry.cause}",
            f"Who must act: {entry.who_must_act}.",
            f"Fix: {entry.fix}",
            f"Microsoft said: {self.message}",
            f"Reference: {'; '.join(self.references())}",
        ]
        if entry.doc_url:
            lines.append(f"More: {entry.doc_url}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the HTTP API, the outbox record and ``--json`` CLI output."""
        entry = self.entry
        return {
            "id": entry.id,
            "ref": entry.ref,
            "title": entry.title,
            "cause": entry.cause,
            "who_must_act": entry.who_must_act,
            "fix": entry.fix,
            "failure_class": entry.failure_class,
            "failure_class_meaning": FAILURE_CLASS_MEANING[entry.failure_class],
            "doc_url": entry.doc_url or None,
            "surface": self.surface,
            "microsoft_message": self.message,
            "raw": self.raw,
            "aadsts": self.aadsts,
            "smtp_code": self.smtp_code,
            "enhanced_code": self.enhanced_code,
            "imap_status": self.imap_status,
            "graph_code": self.graph_code,
            "trace_id": self.trace_id,
            "correlation_id": self.correlation_id,
            "timestamp": self.timestamp,
            "server": self.server,
        }


# --- indexes built from the table ----------------------------------------------------------

_AADSTS_RE = re.compile(r"\bAADSTS(\d{4,9})\b")
# Basic code is optional: Exchange sometimes prints the enhanced code alone ("4.3.2 STOREDRV…"),
# and wrappers such as .NET drop it. Look-arounds keep IP addresses and timestamps out.
_SMTP_RE = re.compile(r"(?<![\d.])(?:([2-5]\d\d)[ -])?([245]\.\d{1,3}\.\d{1,3})(?![\d.])")
_IMAP_STATUS_RE = re.compile(r"(?:^|\s)(NO|BAD|BYE)\s")
_GRAPH_CODE_RE = re.compile(r"\b(Error[A-Z][A-Za-z0-9]+|TooManyRequests)\b")
_TRACE_RE = re.compile(r"Trace ID:\s*([0-9a-fA-F-]{36})")
_CORRELATION_RE = re.compile(r"Correlation ID:\s*([0-9a-fA-F-]{36})")
_TIMESTAMP_RE = re.compile(r"Timestamp:\s*(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?Z?)")
# Exchange appends "[<server fqdn> <ISO time> <hex id>]" to SMTP replies.
_EXCHANGE_TAIL_RE = re.compile(
    r"\[([A-Za-z0-9.-]+\.(?:outlook|office365|partner)\.[A-Za-z0-9.]+)"
    r"(?:\s+(\d{4}-\d\d-\d\dT[\d:.]+Z))?(?:\s+([0-9A-F]{8,}))?\]"
)
# The identity suffix comes as "\r\nTrace ID: …" in raw JSON and as " Trace ID: …" in logs.
_SUFFIX_RE = re.compile(r"\s*(?:\\r\\n|\r?\n|\s)Trace ID:")


def _build_indexes(
    catalogue: Iterable[Entry],
) -> tuple[
    dict[int, Entry],
    list[tuple[re.Pattern[str], Entry]],
    dict[str, list[tuple[SmtpReply, re.Pattern[str] | None, Entry]]],
    list[tuple[re.Pattern[str], Entry]],
    dict[str, Entry],
]:
    """Build the lookup indexes; duplicates are refused so one signal never means two rows."""
    by_aadsts: dict[int, Entry] = {}
    identity: list[tuple[re.Pattern[str], Entry]] = []
    smtp: dict[str, list[tuple[SmtpReply, re.Pattern[str] | None, Entry]]] = {}
    imap: list[tuple[re.Pattern[str], Entry]] = []
    graph: dict[str, Entry] = {}
    ids: set[str] = set()
    for entry in catalogue:
        if entry.id in ids:
            raise ValueError(f"duplicate catalogue id {entry.id}")
        ids.add(entry.id)
        if not entry.matchers:
            raise ValueError(f"{entry.id} has no matcher and could never be shown")
        for m in entry.matchers:
            if isinstance(m, Aadsts):
                if m.code in by_aadsts:
                    raise ValueError(f"AADSTS{m.code} in {by_aadsts[m.code].id} and {entry.id}")
                by_aadsts[m.code] = entry
            elif isinstance(m, IdentityText):
                identity.append((re.compile(m.pattern, re.IGNORECASE), entry))
            elif isinstance(m, SmtpReply):
                rows = smtp.setdefault(m.enhanced, [])
                if any(r[0].text == m.text and r[0].code == m.code for r in rows):
                    raise ValueError(f"SMTP {m.enhanced} {m.text!r} twice ({entry.id})")
                pattern = re.compile(m.text, re.IGNORECASE) if m.text else None
                rows.append((m, pattern, entry))
            elif isinstance(m, ImapReply):
                imap.append((re.compile(m.pattern, re.IGNORECASE), entry))
            else:
                if m.code in graph:
                    raise ValueError(f"Graph {m.code} in {graph[m.code].id} and {entry.id}")
                graph[m.code] = entry
    return by_aadsts, identity, smtp, imap, graph


_BY_AADSTS, _IDENTITY_TEXTS, _SMTP_BY_ENHANCED, _IMAP_PATTERNS, _BY_GRAPH_CODE = _build_indexes(
    CATALOGUE
)
BY_ID: Mapping[str, Entry] = MappingProxyType({entry.id: entry for entry in CATALOGUE})


def entry(entry_id: str) -> Entry:
    """Return the row with this id (KeyError if unknown)."""
    return BY_ID[entry_id]


def lookup_aadsts(code: int) -> Entry | None:
    """Return the row for an AADSTS number, or None if the catalogue does not know it."""
    return _BY_AADSTS.get(code)


# --- matching ----------------------------------------------------------------------------


class _Details(TypedDict):
    trace_id: str | None
    correlation_id: str | None
    timestamp: str | None
    server: str | None


def _first(regex: re.Pattern[str], text: str) -> str | None:
    found = regex.search(text)
    return found.group(1) if found else None


def _common_details(text: str) -> _Details:
    # Identity errors carry "Trace ID / Correlation ID / Timestamp"; Exchange SMTP replies
    # carry "[server time id]" instead. Support needs whichever is present.
    tail = _EXCHANGE_TAIL_RE.search(text)
    return _Details(
        trace_id=_first(_TRACE_RE, text) or (tail.group(3) if tail else None),
        correlation_id=_first(_CORRELATION_RE, text),
        timestamp=_first(_TIMESTAMP_RE, text) or (tail.group(2) if tail else None),
        server=tail.group(1) if tail else None,
    )


def _match_identity(text: str, codes: Iterable[int] = ()) -> tuple[Entry, int | None] | None:
    # The leading AADSTS code in the text is the one Microsoft explains; error_codes from the
    # JSON come next (they can hold a generic code such as 70002 before the specific one).
    candidates = [int(c) for c in _AADSTS_RE.findall(text)] + list(codes)
    for code in candidates:
        found = _BY_AADSTS.get(code)
        if found:
            return found, code
    for pattern, row in _IDENTITY_TEXTS:
        if pattern.search(text):
            return row, (candidates[0] if candidates else None)
    return None


def _match_smtp(text: str) -> tuple[Entry, int | None, str] | None:
    # The most specific matcher wins: one whose text matched beats a code-only one, and a
    # longer text match beats a shorter one. This also picks the real cause out of wrapped
    # replies like ".NET: 5.7.57 Client not authenticated … Error: 535 5.7.139 …".
    best: tuple[int, Entry, int | None, str] | None = None
    for basic, enhanced in _SMTP_RE.findall(text):
        code = int(basic) if basic else None
        for matcher, pattern, row in _SMTP_BY_ENHANCED.get(enhanced, ()):
            if matcher.code is not None and code is not None and matcher.code != code:
                continue
            score = 0
            if pattern is not None:
                found = pattern.search(text)
                if not found:
                    continue
                score = 1 + len(found.group(0))
            if best is None or score > best[0]:
                best = (score, row, code, enhanced)
    return None if best is None else best[1:]


def _match_imap(text: str) -> tuple[Entry, str | None] | None:
    # Earliest reply wins: Exchange sends the cause first ("* BYE Session invalidated -
    # AccessTokenExpired") and consequences after it ("NO AUTHENTICATE failed.").
    best: tuple[int, Entry, str | None] | None = None
    for pattern, row in _IMAP_PATTERNS:
        found = pattern.search(text)
        if found and (best is None or found.start() < best[0]):
            status = _IMAP_STATUS_RE.search(" " + found.group(0) + " ")
            best = (found.start(), row, status.group(1) if status else None)
    return None if best is None else best[1:]


def _match_graph(text: str) -> tuple[Entry, str] | None:
    for code in _GRAPH_CODE_RE.findall(text):
        found = _BY_GRAPH_CODE.get(code)
        if found:
            return found, code
    # A bare HTTP status stands for its Graph meaning only when nothing more specific is known.
    status = re.search(r"\b(413|429)\b", text)
    if status and status.group(1) in _BY_GRAPH_CODE:
        return _BY_GRAPH_CODE[status.group(1)], status.group(1)
    return None


def personalize(text: str, *, server: str = "", user: str = "") -> str:
    """Fill the catalogue's ``<server>`` and ``<user>`` placeholders for one server/mailbox."""
    if server:
        text = text.replace("<server>", f'"{server}"')
    if user:
        text = text.replace("<user>", user).replace("<mailbox>", user)
    return text


def explain(
    text: str, *, surface: Surface = "any", codes: Iterable[int] = ()
) -> Explanation | None:
    """Explain a Microsoft error text, or return None when the catalogue does not know it.

    ``surface`` limits which matchers apply (a 535 in an IMAP log is not an SMTP reply);
    ``codes`` adds AADSTS numbers known from elsewhere (the ``error_codes`` JSON array).
    Callers show the raw text when this returns None.
    """
    if not text and not codes:
        return None
    raw = text.strip()
    details = _common_details(raw)
    want = {"authorize", "token", "smtp", "imap", "graph"} if surface == "any" else {surface}

    # Fixed order for "any": an AADSTS code is the most specific signal there is; SMTP and
    # IMAP texts cannot be confused with each other's patterns.
    if want & MATCHER_SURFACES[Aadsts]:
        ident = _match_identity(raw, codes)
        if ident:
            return Explanation(ident[0], raw, surface, aadsts=ident[1], **details)
    if "smtp" in want:
        smtp = _match_smtp(raw)
        if smtp:
            row, code, enhanced = smtp
            return Explanation(row, raw, "smtp", smtp_code=code, enhanced_code=enhanced, **details)
    if "imap" in want:
        imap = _match_imap(raw)
        if imap:
            return Explanation(imap[0], raw, "imap", imap_status=imap[1], **details)
    if "graph" in want:
        graph = _match_graph(raw)
        if graph:
            return Explanation(graph[0], raw, "graph", graph_code=graph[1], **details)
    return None


# --- generic fallbacks, also as data ---------------------------------------------------------

#: (first reply code, last reply code, class), first match wins; used when no row matches.
SMTP_GENERIC_RULES: tuple[tuple[int, int, FailureClass], ...] = (
    (535, 535, "authorization"),  # authentication refused: hold mail, ask to reconnect
    (400, 499, "temporary"),
    (500, 599, "permanent"),
)

#: (regex over the reply, class), first match wins; used when no row matches.
IMAP_GENERIC_RULES: tuple[tuple[re.Pattern[str], FailureClass], ...] = (
    (re.compile(r"\bNO\b.*\bAUTHENTICATE\b", re.IGNORECASE), "authorization"),
    (re.compile(r"\bBYE\b", re.IGNORECASE), "temporary"),
)


def classify_smtp_reply(code: int, text: str) -> FailureClass:
    """Return the failure class of an SMTP reply: the catalogue first, generic rules after."""
    found = _match_smtp(f"{code} {text}")
    if found:
        return found[0].failure_class
    for low, high, failure_class in SMTP_GENERIC_RULES:
        if low <= code <= high:
            return failure_class
    # Not a 4xx/5xx (e.g. smtplib's -1 for a dropped connection): the dialogue broke, retry.
    return "temporary"


def classify_imap_reply(text: str) -> FailureClass:
    """Return the failure class of an IMAP reply: the catalogue first, generic rules after."""
    found = _match_imap(text)
    if found:
        return found[0].failure_class
    for pattern, failure_class in IMAP_GENERIC_RULES:
        if pattern.search(text):
            return failure_class
    # Other NO/BAD replies are answers to a specific command; retrying later is safe.
    return "temporary"
