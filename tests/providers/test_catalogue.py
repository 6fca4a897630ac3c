"""The Microsoft error catalogue explains each failure of research/microsoft.md §5 by its text.

Every text below is copied verbatim from research/microsoft.md (placeholders such as
``<appid>`` and Microsoft's own "…" included), so a change to the table that breaks an
observed text fails here.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from konvergo.providers.microsoft import catalogue
from konvergo.providers.microsoft.catalogue import (
    CATALOGUE,
    Aadsts,
    Entry,
    classify_imap_reply,
    classify_smtp_reply,
    explain,
)


@dataclass(frozen=True)
class Sample:
    """One observed Microsoft text and the advice it must produce."""

    entry_id: str
    surface: catalogue.Surface
    text: str
    failure_class: catalogue.FailureClass
    portal_path: str  # a fragment of the admin-portal (or Konvergo) path the fix must name


_RECONNECT = "Connect your Outlook account"
_APP = "Microsoft Entra admin center (entra.microsoft.com) → App registrations → <app>"
_EMAIL_APPS = "Users → Active users → <user> → Mail → Manage email apps → check Authenticated SMTP"

SAMPLES: tuple[Sample, ...] = (
    # A. App registration and configuration
    Sample(
        "E-01",
        "authorize",
        "AADSTS50011: The redirect URI 'https://host/microsoft_outlook/confirm' specified in "
        "the request does not match the redirect URIs configured for the application "
        "'<appid>'. Make sure the redirect URI sent in the request matches one added to your "
        "application in the Azure portal. Navigate to https://aka.ms/redirectUriMismatchError "
        "to learn more about how to fix this.",
        "configuration",
        f"{_APP} → Authentication → Web → Redirect URIs",
    ),
    Sample(
        "E-02",
        "token",
        "AADSTS500112: The reply address 'http://xxxxx.local/microsoft_outlook/confirm' does "
        "not match the reply address 'https://xxxxx.local:8071/microsoft_outlook/confirm' "
        "provided when requesting Authorization code.",
        "configuration",
        "Settings → Technical → Parameters → System Parameters → web.base.url",
    ),
    Sample(
        "E-03",
        "token",
        "AADSTS700016: Application with identifier '<id>' was not found in the directory "
        "'<tenant>'. This can happen if the application has not been installed by the "
        "administrator of the tenant or consented to by any user in the tenant. You may have "
        "sent your authentication request to the wrong tenant.",
        "configuration",
        f"{_APP} → Overview",
    ),
    Sample(
        "E-04",
        "token",
        "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
        "request is the client secret value, not the client secret ID, for a secret added to "
        "app '<appid>'.",
        "configuration",
        f"{_APP} → Certificates & secrets → New client secret",
    ),
    Sample(
        "E-05",
        "token",
        "AADSTS7000222: The provided client secret keys for app '<appid>' are expired. Visit "
        "the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or "
        "consider using certificate credentials for added security: https://aka.ms/certCreds.",
        "configuration",
        f"{_APP} → Certificates & secrets → New client secret",
    ),
    Sample(
        "E-06",
        "token",
        "AADSTS7000218: The request body must contain the following parameter: "
        "'client_assertion' or 'client_secret'.",
        "configuration",
        f"{_APP} → Authentication",
    ),
    Sample(
        "E-06",
        "token",
        "AADSTS700025: Client is public so neither 'client_assertion' nor 'client_secret' "
        "should be presented.",
        "configuration",
        "Allow public client flows",
    ),
    Sample(
        "E-07",
        "authorize",
        "AADSTS50194: Application '<appid>'(<name>) is not configured as a multi-tenant "
        "application. Usage of the /common endpoint is not supported for such applications "
        "created after '10/15/2018'. Use a tenant-specific endpoint or configure the "
        "application to be multi-tenant.",
        "configuration",
        "System Parameters → microsoft_outlook.endpoint",
    ),
    Sample(
        "E-08a",
        "authorize",
        "AADSTS50020: User account '<user>@outlook.com' from identity provider 'live.com' does "
        "not exist in tenant '<name>' and cannot access the application '<appid>'(<app>) in "
        "that tenant. The account needs to be added as an external user in the tenant first. "
        "Sign out and sign in again with a different Azure Active Directory user account.",
        "authorization",
        _RECONNECT,
    ),
    Sample(
        "E-08a",
        "authorize",
        "AADSTS90072 \"The external account that the user signs in with doesn't exist on the "
        'tenant that they signed into"',
        "authorization",
        _RECONNECT,
    ),
    Sample(
        "E-08b",
        "authorize",
        "unauthorized_client: The client does not exist or is not enabled for consumers. If "
        "you are the application developer, configure a new application through the App "
        "Registrations in the Azure Portal at https://go.microsoft.com/fwlink/?linkid=2083908.",
        "configuration",
        f"{_APP} → Authentication → Supported account types",
    ),
    Sample(
        "E-08b",
        "authorize",
        'AADSTS9002332 "configured for use by Microsoft Entra users only. Please do not use '
        'the /consumers endpoint"',
        "configuration",
        f"{_APP} → Authentication → Supported account types",
    ),
    Sample(
        "E-09",
        "token",
        "AADSTS70011: The provided value for the input parameter 'scope' is not valid. One or "
        "more scopes in 'offline_access https://graph.microsoft.com/Mail.Read … "
        "https://outlook.office.com/IMAP.AccessAsUser.All' are not compatible with each other.",
        "configuration",
        "Parameters → System Parameters",
    ),
    Sample(
        "E-09",
        "token",
        "AADSTS28000: Provided value for the input parameter scope is not valid because it "
        "contains more than one resource. Scope … is not valid.",
        "configuration",
        "Parameters → System Parameters",
    ),
    Sample(
        "E-09",
        "token",
        "AADSTS28003: Provided value for the input parameter scope cannot be empty when "
        "requesting an access token using the provided authorization code.",
        "configuration",
        "Parameters → System Parameters",
    ),
    # B. Consent and tenant policy
    Sample(
        "E-11",
        "token",
        "AADSTS65001: The user or administrator has not consented to use the application with "
        "ID '<appid>' named '<name>'. Send an interactive authorization request for this user "
        "and resource.",
        "authorization",
        f"{_APP} → API permissions → Grant admin consent for <tenant>",
    ),
    Sample("E-12", "authorize", "Need admin approval", "configuration", "Grant admin consent"),
    Sample(
        "E-12",
        "authorize",
        "<App> needs permission to access resources in your organization that only an admin "
        "can grant. Please ask an admin to grant permission to this app before you can use it.",
        "configuration",
        "Enterprise applications → Admin consent requests",
    ),
    Sample(
        "E-13",
        "authorize",
        "error=access_denied&error_description=AADSTS65004: User declined to consent to access "
        "the app.",
        "authorization",
        _RECONNECT,
    ),
    Sample(
        "E-14",
        "token",
        'AADSTS650052: The app needs access to a service ("<name>") that your organization '
        '"<org>" has not subscribed to or enabled. Contact your IT Admin to review the '
        "configuration of your service subscriptions.",
        "configuration",
        "Users → Active users → <user> → Licenses and apps",
    ),
    Sample(
        "E-14",
        "token",
        "AADSTS500011: The resource principal named https://outlook.office365.com was not "
        "found in the tenant named <tenant>.",
        "configuration",
        "Users → Active users → <user> → Licenses and apps",
    ),
    Sample(
        "E-15a",
        "token",
        "AADSTS50076: Due to a configuration change made by your administrator, or because you "
        "moved to a new location, you must use multi-factor authentication to access "
        "'<resource id>'.",
        "authorization",
        _RECONNECT,
    ),
    Sample(
        "E-15b",
        "token",
        "AADSTS53003: … blocked by Conditional Access policies",
        "configuration",
        "Microsoft Entra admin center → Protection → Conditional Access",
    ),
    Sample(
        "E-15b",
        "token",
        "AADSTS530035: Access has been blocked by security defaults.",
        "configuration",
        "Overview → Properties → Manage security defaults",
    ),
    # C. Token lifecycle
    Sample(
        "E-16",
        "token",
        "AADSTS70008: The provided authorization code or refresh token has expired due to "
        "inactivity. Send a new interactive authorization request for this user and resource.",
        "authorization",
        _RECONNECT,
    ),
    Sample(
        "E-16",
        "token",
        "AADSTS54005: OAuth2 Authorization code was already redeemed, please retry with a new "
        "valid code or use an existing refresh token.",
        "authorization",
        _RECONNECT,
    ),
    Sample(
        "E-16",
        "token",
        "AADSTS501481: The Code_Verifier doesn't match the code_challenge supplied in the "
        "authorization request.",
        "authorization",
        _RECONNECT,
    ),
    Sample(
        "E-17",
        "token",
        "AADSTS700082: The refresh token has expired due to inactivity. The token was issued "
        "on 2023-04-20T18:48:41.6655773Z and was inactive for 90.00:00:00.",
        "authorization",
        _RECONNECT,
    ),
    Sample(
        "E-18a",
        "token",
        "AADSTS50173: The provided grant has expired due to it being revoked, a fresh auth "
        "token is needed. The user might have changed or reset their password. The grant was "
        "issued on '<t1>' and the TokensValidFrom date (before which tokens are not valid) for "
        "this user is '<t2>'.",
        "authorization",
        _RECONNECT,
    ),
    Sample(
        "E-18a",
        "token",
        'AADSTS70043 "expired or is invalid due to sign-in frequency checks by Conditional Access"',
        "authorization",
        _RECONNECT,
    ),
    Sample(
        "E-18b",
        "token",
        'AADSTS700081 "maximum allowed lifetime for this application is 1.00:00:00"',
        "configuration",
        f"{_APP} → Authentication",
    ),
    Sample(
        "E-19a",
        "authorize",
        "AADSTS50126: Error validating credentials due to invalid username or password.",
        "authorization",
        "Microsoft Entra admin center → Users → <user> → Reset password",
    ),
    Sample(
        "E-19b",
        "authorize",
        "AADSTS50053 account locked (too many attempts or malicious IP)",
        "configuration",
        "Microsoft Entra admin center → Users → <user>",
    ),
    # D. SMTP AUTH
    Sample(
        "E-20",
        "smtp",
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
        "Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. "
        "[MN2PR05CA0004.namprd05.prod.outlook.com 2023-09-12T20:59:57.214Z 08DBB276B7E699C4]",
        "configuration",
        _EMAIL_APPS,
    ),
    Sample(
        "E-20",
        "smtp",
        "5.7.57 Client not authenticated to send mail. Error: 535 5.7.139 Authentication "
        "unsuccessful, SmtpClientAuthentication is disabled for the Tenant.",
        "configuration",
        'Settings → Mail flow → uncheck "Turn off SMTP AUTH protocol for your organization"',
    ),
    Sample(
        "E-21a",
        "smtp",
        "535 5.7.139 Authentication unsuccessful, the request did not meet the criteria to be "
        "authenticated successfully.",
        "configuration",
        _EMAIL_APPS,
    ),
    Sample(
        "E-21b",
        "smtp",
        "535 5.7.139 Authentication unsuccessful, user is locked by your organization's "
        "security defaults policy.",
        "configuration",
        "Microsoft Entra admin center → Overview → Properties → Manage security defaults",
    ),
    Sample(
        "E-22",
        "smtp",
        "535 5.7.139 Authentication unsuccessful, basic authentication is disabled. "
        "[PH7P220CA0132.NAMP220.PROD.OUTLOOK.COM 2024-11-11T21:51:32.927Z 08DD021D9EEB05BC]",
        "configuration",
        "Outgoing Email Servers (or Incoming Mail Servers) → <server> → check Outlook",
    ),
    Sample(
        "E-22",
        "smtp",
        "550 5.7.30 Basic authentication is not supported for Client Submission.",
        "configuration",
        "Outgoing Email Servers (or Incoming Mail Servers) → <server> → check Outlook",
    ),
    Sample(
        "E-23",
        "smtp",
        "535 5.7.3 Authentication unsuccessful [AM0PR06CA0126.eurprd06.prod.outlook.com "
        "2024-02-14T14:50:26.590Z 08DC2D372B4C3DED]",
        "authorization",
        _EMAIL_APPS,
    ),
    Sample(
        "E-24",
        "smtp",
        "530 5.7.57 Client not authenticated to send mail.",
        "configuration",
        "Outgoing Email Servers (or Incoming Mail Servers) → <server> → Connection encryption",
    ),
    Sample(
        "E-25",
        "smtp",
        "554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied;"
        " Failed to process message due to a permanent exception with message Cannot submit "
        "message. 0.35250:…",
        "configuration",
        "Recipients → Mailboxes → <mailbox> (the From address) → Delegation → Send as",
    ),
    Sample(
        "E-25",
        "smtp",
        "554 5.2.252 SendAsDenied; user@outlook.com not allowed to send as other@domain; "
        "STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; …",
        "configuration",
        "Recipients → Mailboxes → <mailbox> (the From address) → Delegation → Send as",
    ),
    Sample(
        "E-25",
        "smtp",
        "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
        "configuration",
        "Recipients → Mailboxes → <mailbox> (the From address) → Delegation → Send as",
    ),
    Sample(
        "E-26",
        "smtp",
        "550 5.2.252 Sender throttled due to continuous send as denied errors.",
        "temporary",
        "Reports → Mail flow → SMTP AUTH clients",
    ),
    Sample(
        "E-26",
        "smtp",
        "550 5.2.251 Sender throttled due to continuous mailbox full errors.",
        "temporary",
        "Reports → Mail flow → SMTP AUTH clients",
    ),
    Sample(
        "E-27",
        "smtp",
        "432 4.3.2 Concurrent connections limit exceeded.",
        "temporary",
        "Reports → Mail flow → SMTP AUTH clients",
    ),
    Sample(
        "E-27",
        "smtp",
        "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded.",
        "temporary",
        "Reports → Mail flow → SMTP AUTH clients",
    ),
    Sample(
        "E-28",
        "smtp",
        "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to "
        "process message due to a permanent exception with message The message can't be "
        "submitted because the sender's submission quota was exceeded.",
        "temporary",
        "Anti-spam → Outbound spam policy",
    ),
    Sample(
        "E-28",
        "smtp",
        "550 5.1.90 Your message can't be sent because you've reached your daily limit for "
        "message recipients",
        "temporary",
        "Anti-spam → Outbound spam policy",
    ),
    Sample(
        "E-29",
        "smtp",
        "554 5.2.2 mailbox full; "
        "STOREDRV.Submission.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded",
        "configuration",
        "Data lifecycle management → Retention policies",
    ),
    Sample(
        "E-30",
        "smtp",
        "430 4.2.0 STOREDRV; mailbox logon failure; "
        "STOREDRV.Submission.Exception:ConnectionFailedTransientException.MapiExceptionLogonFailed;"
        " Failed to process message due to a transient exception with message "
        "[BeginDiagnosticData]Cannot open mailbox. Server = …",
        "configuration",
        "Recipients → Mailboxes → <mailbox> → Delegation → Read and manage",
    ),
    Sample(
        "E-31",
        "smtp",
        "421 4.7.66 TLS 1.0 and 1.1 are not supported. Please upgrade/update your client to "
        "support TLS 1.2. Visit https://aka.ms/smtp_auth_tls.",
        "configuration",
        "Connection encryption: TLS (STARTTLS)",
    ),
    Sample(
        "E-32",
        "smtp",
        "550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.",
        "configuration",
        "Email & collaboration → Review → Restricted entities",
    ),
    Sample(
        "E-32",
        "smtp",
        "5.7.705 Access denied, tenant has exceeded threshold.",
        "configuration",
        "Email & collaboration → Review → Restricted entities",
    ),
    Sample(
        "E-32",
        "smtp",
        "550 5.1.8 Access denied, bad outbound sender",
        "configuration",
        "Email & collaboration → Review → Restricted entities",
    ),
    # E. IMAP
    Sample(
        "E-33",
        "imap",
        "A01 NO AUTHENTICATE failed.",
        "authorization",
        "Mail → Manage email apps → check IMAP",
    ),
    Sample(
        "E-34",
        "imap",
        "A00000001 OK AUTHENTICATE completed.\r\n"
        "A00000003 BAD User is authenticated but not connected.\r\n"
        "* BYE Connection closed. 14",
        "authorization",
        "Recipients → Mailboxes → <mailbox> → Delegation → Read and manage",
    ),
    Sample(
        "E-35",
        "imap",
        "* BYE Session invalidated - AccessTokenExpired; 2959 NO AUTHENTICATE failed.",
        "temporary",
        "Test and Confirm",
    ),
    Sample(
        "E-36",
        "imap",
        "BAD Request is throttled. Suggested Backoff Time: 299961 milliseconds",
        "temporary",
        "Incoming Mail Servers",
    ),
    # F. Graph
    Sample(
        "E-37a",
        "graph",
        "403 ErrorSendAsDenied",
        "configuration",
        "Delegation → Send as",
    ),
    Sample(
        "E-37b",
        "graph",
        "403 ErrorAccessDenied",
        "configuration",
        "API permissions → Grant admin consent",
    ),
    Sample(
        "E-37c",
        "graph",
        "ErrorMailboxNotEnabledForRESTAPI",
        "configuration",
        "Licenses and apps",
    ),
    Sample(
        "E-37d", "graph", "413 / ErrorMessageSizeExceeded", "permanent", "Outgoing Email Servers"
    ),
    Sample(
        "E-37e",
        "graph",
        '{"error":{"code":"ErrorMimeContentInvalidBase64String","message":"Invalid base64 '
        'string for MIME content."}}',
        "permanent",
        "Konvergo → Outbox",
    ),
    Sample("E-37f", "graph", "429 TooManyRequests", "temporary", "Konvergo → Outbox"),
)


def _case_ids() -> list[str]:
    seen: dict[str, int] = {}
    ids = []
    for sample in SAMPLES:
        seen[sample.entry_id] = seen.get(sample.entry_id, 0) + 1
        n = seen[sample.entry_id]
        ids.append(sample.entry_id if n == 1 else f"{sample.entry_id}-text{n}")
    return ids


@pytest.mark.parametrize("sample", SAMPLES, ids=_case_ids())
def test_microsoft_text_is_explained_by_its_entry(sample: Sample) -> None:
    """Microsoft's exact text maps to its entry, its queue behaviour and a named portal path."""
    found = explain(sample.text, surface=sample.surface)

    assert found is not None, sample.text
    assert found.entry.id == sample.entry_id
    assert found.failure_class == sample.failure_class
    assert sample.portal_path in found.entry.fix


@pytest.mark.parametrize("sample", SAMPLES, ids=_case_ids())
def test_microsoft_text_is_explained_without_knowing_the_surface(sample: Sample) -> None:
    """The CLI and pasted texts use surface "any"; they must reach the same entry."""
    found = explain(sample.text)

    assert found is not None
    assert found.entry.id == sample.entry_id


def test_every_catalogue_entry_is_reachable_by_a_sample_text() -> None:
    """A row no observed text reaches is dead data; each row needs at least one sample."""
    found = (explain(s.text, surface=s.surface) for s in SAMPLES)
    reached = {explanation.entry.id for explanation in found if explanation is not None}

    assert {row.id for row in CATALOGUE} - reached == set()


def test_every_entry_says_who_acts_and_names_a_place_to_act() -> None:
    """Each row has a cause, an allowed actor, a failure class and a fix with a "→" path."""
    actors = {"app registration admin", "tenant admin", "mailbox user", "Konvergo administrator"}
    for row in CATALOGUE:
        assert row.cause and row.title, row.id
        assert row.who_must_act in actors | {"wait"}, row.id
        assert row.failure_class in catalogue.FAILURE_CLASS_MEANING, row.id
        assert "→" in row.fix, row.id


def test_catalogue_refuses_one_aadsts_code_in_two_rows() -> None:
    """The index builder rejects ambiguous data instead of letting table order decide."""
    twice = (
        Entry("X-1", "t", (Aadsts(1),), "c", "wait", "a → b", "temporary"),
        Entry("X-2", "t", (Aadsts(1),), "c", "wait", "a → b", "temporary"),
    )

    with pytest.raises(ValueError, match="AADSTS1 in X-1 and X-2"):
        catalogue._build_indexes(twice)


def test_unknown_text_is_not_explained() -> None:
    """An unknown reply yields None so callers show Microsoft's raw text instead."""
    assert explain("550 5.1.1 RESOLVER.ADR.RecipNotFound; not found") is None
    assert explain("AADSTS99999999: something new") is None
    assert explain("") is None


def test_surface_keeps_smtp_texts_out_of_imap_lookups() -> None:
    """An SMTP reply is not matched when the caller says the text came from IMAP."""
    assert explain("535 5.7.3 Authentication unsuccessful", surface="imap") is None


def test_explanation_carries_microsoft_identifiers_for_support() -> None:
    """Trace ID, Correlation ID and Timestamp from the description reach as_dict()."""
    text = (
        "AADSTS700082: The refresh token has expired due to inactivity.\r\n"
        "Trace ID: 6e94ade5-10de-4d67-909a-14d845813500\r\n"
        "Correlation ID: 0e87b495-1e24-4882-be85-d012c216f4f6\r\n"
        "Timestamp: 2020-07-06 22:31:52Z"
    )

    data = explain(text, surface="token").as_dict()  # type: ignore[union-attr]

    assert data["id"] == "E-17"
    assert data["aadsts"] == 700082
    assert data["trace_id"] == "6e94ade5-10de-4d67-909a-14d845813500"
    assert data["correlation_id"] == "0e87b495-1e24-4882-be85-d012c216f4f6"
    assert data["timestamp"] == "2020-07-06 22:31:52Z"
    assert data["microsoft_message"] == (
        "AADSTS700082: The refresh token has expired due to inactivity."
    )


def test_summary_names_cause_actor_fix_and_exchange_reference() -> None:
    """The one text shown in the UI and CLI carries the fix and Exchange's server id."""
    found = explain(
        "535 5.7.3 Authentication unsuccessful [AM0PR06CA0126.eurprd06.prod.outlook.com "
        "2024-02-14T14:50:26.590Z 08DC2D372B4C3DED]"
    )

    summary = found.summary()  # type: ignore[union-attr]

    assert "Who must act: mailbox user." in summary
    assert "Fix: " in summary and "Connect your Outlook account" in summary
    assert "535 5.7.3" in summary
    assert "08DC2D372B4C3DED" in summary
    assert "AM0PR06CA0126.eurprd06.prod.outlook.com" in summary


def test_research_ids_come_back_from_split_rows() -> None:
    """Rows split by owner keep their research id for cross-reference."""
    assert catalogue.entry("E-15b").ref == "E-15"
    assert catalogue.entry("E-20").ref == "E-20"


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (554, "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException;", "temporary"),
        (
            535,
            "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for "
            "the Tenant.",
            "configuration",
        ),
        (451, "4.4.0 Message failed to be made redundant due to A shadow copy", "temporary"),
        (535, "5.7.8 Error: authentication failed", "authorization"),
        (550, "5.1.1 RESOLVER.ADR.RecipNotFound; not found", "permanent"),
        (-1, "Connection unexpectedly closed", "temporary"),
    ],
    ids=[
        "catalogue-quota",
        "catalogue-5.7.139",
        "generic-4xx",
        "generic-535",
        "generic-5xx",
        "no-reply",
    ],
)
def test_smtp_reply_class_comes_from_catalogue_then_generic_rules(
    code: int, text: str, expected: str
) -> None:
    """Known replies use their row's class; unknown ones fall back to 4xx/535/5xx rules."""
    assert classify_smtp_reply(code, text) == expected


def test_imap_reply_class_comes_from_catalogue_then_generic_rules() -> None:
    """Known IMAP replies use their row; an unknown BYE is temporary."""
    assert classify_imap_reply("* BYE Session invalidated - AccessTokenExpired") == "temporary"
    assert classify_imap_reply("A1 NO AUTHENTICATE failed.") == "authorization"
    assert classify_imap_reply("* BYE Server shutting down") == "temporary"
