"""SANDBOX ONLY: the identity platform's HTML pages.

Plain forms, no JavaScript: tests post them with ``requests`` and a person can click them
in a browser. Each page carries the ``ctx`` of the pending authorization request.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from konvergo.sandbox.idp_errors import Report

_STYLE = (
    "body{font-family:Segoe UI,Arial,sans-serif;background:#f2f2f2;margin:0}"
    "main{background:#fff;max-width:440px;margin:48px auto;padding:44px;"
    "box-shadow:0 2px 6px rgba(0,0,0,.2)}"
    "h1{font-size:24px;font-weight:600}label{display:block;margin:6px 0}"
    ".error{color:#e81123}.banner{font-size:12px;color:#666}"
    "input[type=submit]{min-width:108px;padding:6px 12px;margin-right:8px}"
    "pre{white-space:pre-wrap;font-size:12px}"
)


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body><main>"
        "<p class='banner'>Konvergo sandbox: simulated Microsoft sign-in "
        "(not Microsoft, no real accounts)</p>"
        f"{body}</main></body></html>"
    )


def _hidden(ctx: str) -> str:
    return f"<input type='hidden' name='ctx' value='{escape(ctx, quote=True)}'>"


def signin(
    *,
    action: str,
    ctx: str,
    app_name: str,
    accounts: Iterable[tuple[str, str]],
    selected: str,
    error: str = "",
) -> str:
    """The account picker: one radio button per mailbox, and the password."""
    rows = []
    for upn, name in accounts:
        checked = " checked" if upn.lower() == selected.lower() else ""
        rows.append(
            f"<label><input type='radio' name='login' value='{escape(upn, quote=True)}'"
            f"{checked}> {escape(name)} &lt;{escape(upn)}&gt;</label>"
        )
    message = f"<p class='error' id='error'>{escape(error)}</p>" if error else ""
    body = (
        f"<h1>Sign in</h1><p>to continue to {escape(app_name)}</p>{message}"
        f"<form method='post' action='{escape(action, quote=True)}'>{_hidden(ctx)}"
        "<fieldset><legend>Pick an account</legend>" + "".join(rows) + "</fieldset>"
        "<label>Password <input type='password' name='passwd' autocomplete='off'></label>"
        "<input type='submit' name='action' value='Sign in'></form>"
    )
    return _page("Sign in to your account", body)


def consent(
    *,
    action: str,
    ctx: str,
    app_name: str,
    upn: str,
    permissions: Iterable[tuple[str, str]],
    offer_org_consent: bool,
) -> str:
    """The consent screen: requested permissions, "Yes" and "Cancel"."""
    items = "".join(
        f"<li>{escape(text)} <code>{escape(scope)}</code></li>" for scope, text in permissions
    )
    org = (
        "<label><input type='checkbox' name='consent_org' value='true'> Consent on behalf "
        "of your organization</label>"
        if offer_org_consent
        else ""
    )
    body = (
        f"<p>{escape(upn)}</p><h1>Permissions requested</h1>"
        f"<p><strong>{escape(app_name)}</strong></p><p>This app would like to:</p>"
        f"<ul id='permissions'>{items}</ul>"
        f"<form method='post' action='{escape(action, quote=True)}'>{_hidden(ctx)}{org}"
        "<input type='submit' name='action' value='Yes'>"
        "<input type='submit' name='action' value='Cancel'></form>"
    )
    return _page("Permissions requested", body)


def admin_approval(*, app_name: str, signin_url: str, return_url: str) -> str:
    """Users may not consent in this tenant and no admin has (research E-12)."""
    body = (
        "<h1>Need admin approval</h1>"
        f"<p>{escape(app_name)} needs permission to access resources in your organization "
        "that only an admin can grant. Please ask an admin to grant permission to this app "
        "before you can use it.</p>"
        f"<p><a id='admin-signin' href='{escape(signin_url, quote=True)}'>Have an admin "
        "account? Sign in with that account</a></p>"
        f"<p><a id='return' href='{escape(return_url, quote=True)}'>Return to the "
        "application without granting consent</a></p>"
    )
    return _page("Need admin approval", body)


def error(report: Report) -> str:
    """Microsoft's own error page: shown instead of redirecting to an untrusted URI."""
    entry = report.error.entry
    if entry.code:
        heading = "Sorry, but we're having trouble signing you in."
        message = report.error.message
    else:  # the personal-account side words its page differently
        heading = "We're unable to complete your request"
        message = f"{entry.error}: {report.error.message}"
    body = (
        f"<h1>{escape(heading)}</h1><p id='message'>{escape(message)}</p>"
        "<h2>Troubleshooting details</h2><pre id='details'>"
        f"Request Id: {escape(report.trace_id)}\n"
        f"Correlation Id: {escape(report.correlation_id)}\n"
        f"Timestamp: {escape(report.timestamp)}\n"
        f"Message: {escape(message)}</pre>"
    )
    return _page("Sign in to your account", body)


def form_post(redirect_uri: str, params: Iterable[tuple[str, str]]) -> str:
    """``response_mode=form_post``: a form the user (or a script) submits to the app."""
    fields = "".join(
        f"<input type='hidden' name='{escape(k, quote=True)}' value='{escape(v, quote=True)}'>"
        for k, v in params
    )
    body = (
        f"<form method='post' action='{escape(redirect_uri, quote=True)}'>{fields}"
        "<p>Script is disabled. Click Submit to continue.</p>"
        "<input type='submit' value='Submit'></form>"
    )
    return _page("Working...", body)
