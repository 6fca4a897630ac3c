"""Threading keys and bounce detection for parsed incoming mail.

(Named ``threads`` rather than ``threading`` so it never shadows the stdlib module.)
"""

from __future__ import annotations

from dataclasses import dataclass

from konvergo.mailparse.incoming import ParsedMessage

# DSN actions that report progress, not failure: a "delayed" warning is not a bounce.
_NON_FAILURE_ACTIONS = frozenset({"delayed", "delivered", "relayed", "expanded"})
_DAEMON_LOCAL_PARTS = frozenset({"mailer-daemon"})


def thread_keys(parsed: ParsedMessage) -> list[str]:
    """Return the Message-IDs to look up to find the thread, most specific first.

    In-Reply-To names the direct parent, so it comes first; then References from newest to
    oldest, because the newest ancestor we know is the closest one. The message's own id
    is never a key (a resent copy must not thread onto itself).
    """
    keys: list[str] = []
    if parsed.in_reply_to:
        keys.append(parsed.in_reply_to)
    keys.extend(reversed(parsed.references))
    return [key for key in dict.fromkeys(keys) if key != parsed.message_id]


@dataclass(frozen=True, slots=True)
class Bounce:
    """A non-delivery report.

    Attributes:
        original_message_id: the id of the message that bounced, when it can be found.
        recipients: addresses the report says failed (``Final-Recipient``), lower-case.
        statuses: the enhanced status codes of those failures ("5.1.1").
        diagnostic: the remote server's text (``Diagnostic-Code``), "" when absent.
    """

    original_message_id: str | None
    recipients: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    diagnostic: str = ""


def is_bounce(parsed: ParsedMessage) -> Bounce | None:
    """Return a :class:`Bounce` when ``parsed`` reports a failed delivery, else None.

    A message is a bounce when it is a delivery-status report (``multipart/report;
    report-type=delivery-status`` or any ``message/delivery-status`` part) or comes from
    ``MAILER-DAEMON``. Reports whose every action is "delayed", "delivered", "relayed" or
    "expanded" are progress notices, not bounces. The original Message-ID is taken from,
    in order: ``X-Microsoft-Original-Message-ID`` of the returned message (Exchange
    re-stamps Message-ID and keeps ours there), the returned message's ``Message-ID``,
    then the bounce's own ``In-Reply-To``.
    """
    report = parsed.report
    is_dsn = report is not None and (report.report_type == "delivery-status" or report.has_status)
    from_daemon = parsed.from_email.partition("@")[0] in _DAEMON_LOCAL_PARTS
    if not (is_dsn or from_daemon):
        return None
    if report is not None and report.actions and set(report.actions) <= _NON_FAILURE_ACTIONS:
        return None
    original = None
    if report is not None:
        original = report.original_ms_message_id or report.original_message_id
    return Bounce(
        original_message_id=original or parsed.in_reply_to,
        recipients=report.failed_recipients if report is not None else (),
        statuses=report.statuses if report is not None else (),
        diagnostic=report.diagnostic if report is not None else "",
    )
