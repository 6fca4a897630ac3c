"""Outgoing server selection and From/envelope rewriting (konvergo.services.routing).

Cases come from the routing rules, the product page's two example configurations (a single
notifications server; per-user servers for john and jane with a notifications fallback and a
mass-mailing server with an empty filter) and a brute-force cross-check against a naive O(n)
reference implementation written here from the same rules.
"""

from __future__ import annotations

import functools
import random
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from konvergo.errors import RoutingError, ValidationFailed
from konvergo.services.routing import (
    Decision,
    RoutingParams,
    RoutingTable,
    ServerInfo,
    encapsulate,
    format_mailbox,
    normalize_address,
    parse_filter,
)

PARAMS = RoutingParams(default_from="notifications", catchall_domain="example.com")

# Product page, "Configuration with a single outgoing mail server".
SINGLE = [ServerInfo(1, 10, "notifications@example.com", name="Notifications")]

# Product page, "User-specific (multiple user) configuration", plus the mass-mailing server
# whose FROM Filtering stays empty and which is chosen as the Dedicated Server.
JOHN = ServerInfo(1, 10, "john@example.com", name="John")
JANE = ServerInfo(2, 10, "jane@example.com", name="Jane")
NOTIFICATIONS = ServerInfo(3, 10, "notifications@example.com", name="Notifications")
MARKETING = ServerInfo(4, 10, "", name="Marketing")
MULTI = [JOHN, JANE, NOTIFICATIONS, MARKETING]
MULTI_PARAMS = RoutingParams("notifications", "example.com", mass_mailing_server_id=4)


def row(decision: Decision) -> tuple[int, str, str, str, str | None]:
    """A decision as a plain tuple, for table comparisons."""
    return (
        decision.server_id,
        decision.route,
        decision.header_from,
        decision.envelope_from,
        decision.reply_to,
    )


# --------------------------------------------------------------------------------------------
# The product page's configurations
# --------------------------------------------------------------------------------------------

SINGLE_CASES = [
    (
        '"John Doe" <john@example.com>',
        None,
        (
            1,
            "notifications",
            '"John Doe" <notifications@example.com>',
            "notifications@example.com",
            "catchall@example.com",
        ),
    ),
    (
        "john@example.com",
        None,
        (
            1,
            "notifications",
            '"john" <notifications@example.com>',
            "notifications@example.com",
            "catchall@example.com",
        ),
    ),
    (
        '"Customer" <someone@customer.org>',
        None,
        (
            1,
            "notifications",
            '"Customer" <notifications@example.com>',
            "notifications@example.com",
            "catchall@example.com",
        ),
    ),
    (
        "notifications@example.com",
        None,
        (1, "sender", "notifications@example.com", "notifications@example.com", None),
    ),
    (
        "",
        None,
        (
            1,
            "notifications",
            "notifications@example.com",
            "notifications@example.com",
            "catchall@example.com",
        ),
    ),
    (
        "Sales <sales@example.com>",
        "sales-team@example.com",
        (
            1,
            "notifications",
            '"Sales" <notifications@example.com>',
            "notifications@example.com",
            "sales-team@example.com",
        ),
    ),
]


@pytest.mark.parametrize(("header_from", "reply_to", "expected"), SINGLE_CASES)
def test_single_server_sends_everything_as_notifications_keeping_the_name(
    header_from: str, reply_to: str | None, expected: tuple[object, ...]
) -> None:
    """With one notifications server every mail goes through it as "Name" <notifications@…>."""
    table = RoutingTable(SINGLE, PARAMS)
    assert row(table.decide(header_from, reply_to=reply_to)) == expected


MULTI_CASES = [
    ("John <john@example.com>", "transactional", (1, "sender", '"John" <john@example.com>')),
    ("JOHN@EXAMPLE.COM", "transactional", (1, "sender", "JOHN@example.com")),
    ("jane@example.com", "transactional", (2, "sender", "jane@example.com")),
    (
        "Bob <bob@example.com>",
        "transactional",
        (3, "notifications", '"Bob" <notifications@example.com>'),
    ),
    (
        "partner@customer.org",
        "transactional",
        (3, "notifications", '"partner" <notifications@example.com>'),
    ),
    (
        "Newsletter <news@example.com>",
        "mass_mailing",
        (4, "mass_mailing", '"Newsletter" <news@example.com>'),
    ),
    ("john@example.com", "mass_mailing", (4, "mass_mailing", "john@example.com")),
]


@pytest.mark.parametrize(("header_from", "purpose", "expected"), MULTI_CASES)
def test_per_user_servers_notifications_fallback_and_dedicated_mass_mailing_server(
    header_from: str, purpose: str, expected: tuple[object, ...]
) -> None:
    """Users with their own server send as themselves, others via notifications, mailings via #4."""
    table = RoutingTable(MULTI, MULTI_PARAMS)
    decision = table.decide(header_from, purpose=purpose)  # type: ignore[arg-type]
    assert (decision.server_id, decision.route, decision.header_from) == expected


def test_personal_server_envelope_is_the_mailbox_itself() -> None:
    """A server that accepts only john@ cannot take the bounce address, so MAIL FROM is john@."""
    decision = RoutingTable(MULTI, MULTI_PARAMS).decide("John <john@example.com>")
    assert decision.envelope_from == "john@example.com"
    assert decision.reply_to is None


def test_dedicated_mass_mailing_server_with_empty_filter_uses_the_bounce_envelope() -> None:
    """An empty filter accepts the bounce address, so mass mail bounces come back to the ERP."""
    decision = RoutingTable(MULTI, MULTI_PARAMS).decide("news@example.com", purpose="mass_mailing")
    assert decision.envelope_from == "bounce@example.com"
    assert decision.reply_to is None


def test_dedicated_mass_mailing_server_is_never_the_transactional_fallback() -> None:
    """Without the notifications server, transactional mail fails rather than use server #4."""
    table = RoutingTable([JOHN, JANE, MARKETING], MULTI_PARAMS)
    with pytest.raises(RoutingError) as caught:
        table.decide("bob@example.com")
    message = str(caught.value)
    assert "No outgoing server accepts bob@example.com" in message
    assert "'Marketing' (#4) would accept bob@example.com but is the Dedicated Server" in message


def test_dedicated_server_takes_no_transactional_mail_even_when_its_filter_matches() -> None:
    """Choosing a server as the Dedicated Server reserves it, whatever its FROM Filtering says."""
    marketing = ServerInfo(4, 1, "bob@example.com, example.com", name="Marketing")
    table = RoutingTable([NOTIFICATIONS, marketing], MULTI_PARAMS)
    assert table.is_reserved(marketing)
    decision = table.decide("bob@example.com")
    assert (decision.server_id, decision.route) == (3, "notifications")
    assert table.decide("bob@example.com", purpose="mass_mailing").server_id == 4


def test_without_a_dedicated_server_mass_mailing_routes_like_other_mail() -> None:
    """With no Dedicated Server chosen, a mailing is rewritten to notifications like any mail."""
    table = RoutingTable(MULTI, PARAMS)
    decision = table.decide("Newsletter <news@example.com>", purpose="mass_mailing")
    assert row(decision) == (
        3,
        "notifications",
        '"Newsletter" <notifications@example.com>',
        "notifications@example.com",
        "catchall@example.com",
    )


def test_without_a_dedicated_server_an_unflagged_empty_filter_server_is_the_catch_all() -> None:
    """An empty-filter server that nobody reserved accepts what no other server accepts."""
    table = RoutingTable([JOHN, MARKETING], PARAMS)
    decision = table.decide("Partner <partner@customer.org>")
    assert row(decision) == (
        4,
        "catch_all_server",
        '"Partner" <partner@customer.org>',
        "bounce@example.com",
        None,
    )


def test_mass_mailing_only_servers_take_no_mail_unless_chosen_explicitly() -> None:
    """A server flagged Mass Mailing Only is skipped by automatic routing, for every purpose."""
    flagged = ServerInfo(4, 1, "example.com", mass_mailing_only=True, name="Marketing")
    table = RoutingTable([flagged], PARAMS)
    for purpose in ("transactional", "mass_mailing"):
        with pytest.raises(RoutingError, match="is marked Mass Mailing Only"):
            table.decide("bob@example.com", purpose=purpose)  # type: ignore[arg-type]
    assert table.decide("bob@example.com", forced_server_id=4).server_id == 4


def test_mass_mailing_only_server_as_dedicated_server_takes_mailings() -> None:
    """The flag and the Dedicated Server setting agree: the flagged server sends the mailings."""
    flagged = ServerInfo(4, 1, "", mass_mailing_only=True)
    table = RoutingTable([NOTIFICATIONS, flagged], MULTI_PARAMS)
    assert table.decide("news@example.com", purpose="mass_mailing").server_id == 4
    assert table.decide("news@example.com").server_id == 3


# --------------------------------------------------------------------------------------------
# Rule order and ties
# --------------------------------------------------------------------------------------------


ORDER_CASES = [
    (
        "exact address on a low-priority server beats its domain on a high-priority server",
        [ServerInfo(1, 1, "example.com"), ServerInfo(2, 99, "john@example.com")],
        "john@example.com",
        (2, "sender"),
    ),
    (
        "domain beats the notifications route",
        [ServerInfo(1, 1, "notifications@example.com"), ServerInfo(2, 99, "customer.org")],
        "a@customer.org",
        (2, "domain"),
    ),
    (
        "notifications route beats a server with an empty filter",
        [ServerInfo(1, 1, ""), ServerInfo(2, 99, "notifications@example.com")],
        "a@customer.org",
        (2, "notifications"),
    ),
    (
        "notifications domain is enough for the notifications route",
        [ServerInfo(1, 1, ""), ServerInfo(2, 99, "example.com")],
        "a@customer.org",
        (2, "notifications"),
    ),
    (
        "empty filter is the last resort",
        [ServerInfo(1, 5, "other.org"), ServerInfo(2, 5, "")],
        "a@customer.org",
        (2, "catch_all_server"),
    ),
    (
        "lowest priority wins among exact matches",
        [ServerInfo(1, 20, "john@example.com"), ServerInfo(2, 10, "john@example.com")],
        "john@example.com",
        (2, "sender"),
    ),
    (
        "lowest id breaks a priority tie",
        [ServerInfo(9, 10, "john@example.com"), ServerInfo(3, 10, "john@example.com")],
        "john@example.com",
        (3, "sender"),
    ),
    (
        "lowest priority wins among domain matches",
        [ServerInfo(1, 20, "customer.org"), ServerInfo(2, 10, "x.org, customer.org")],
        "a@customer.org",
        (2, "domain"),
    ),
    (
        "lowest id breaks a tie among empty filters",
        [ServerInfo(8, 1, ""), ServerInfo(5, 1, ""), ServerInfo(6, 0, "x.org")],
        "a@customer.org",
        (5, "catch_all_server"),
    ),
    (
        "a filter listing several addresses matches each of them",
        [ServerInfo(1, 1, "john@example.com, jane@example.com")],
        "jane@example.com",
        (1, "sender"),
    ),
    (
        "no subdomain inheritance: sub.example.com is not example.com",
        [ServerInfo(1, 1, "example.com"), ServerInfo(2, 2, "")],
        "a@sub.example.com",
        (1, "notifications"),
    ),
]


@pytest.mark.parametrize(
    ("servers", "header_from", "expected"),
    [case[1:] for case in ORDER_CASES],
    ids=[case[0] for case in ORDER_CASES],
)
def test_rules_apply_in_order_with_priority_then_id_ties(
    servers: list[ServerInfo], header_from: str, expected: tuple[int, str]
) -> None:
    """Exact address, then domain, then notifications, then empty filter; ties by priority, id."""
    for ordering in (servers, list(reversed(servers))):
        decision = RoutingTable(ordering, PARAMS).decide(header_from)
        assert (decision.server_id, decision.route) == expected


def test_inactive_servers_are_ignored() -> None:
    """An archived exact-address server is skipped and the next rule applies."""
    servers = [
        ServerInfo(1, 1, "john@example.com", active=False),
        ServerInfo(2, 5, "example.com"),
    ]
    decision = RoutingTable(servers, PARAMS).decide("john@example.com")
    assert (decision.server_id, decision.route) == (2, "domain")


def test_failure_names_an_archived_server_that_would_have_matched() -> None:
    """When only an archived server accepts the sender, the error says to unarchive it."""
    servers = [ServerInfo(1, 1, "john@example.com", active=False, name="John")]
    with pytest.raises(RoutingError, match=r"'John' \(#1\) would accept .* is archived"):
        RoutingTable(servers, PARAMS).decide("john@example.com")


# --------------------------------------------------------------------------------------------
# Case and IDNA
# --------------------------------------------------------------------------------------------


CASE_IDNA_CASES = [
    ("John@Example.COM", "JOHN@example.com", (1, "sender")),
    ("EXAMPLE.com", "bob@example.COM", (1, "domain")),
    ("bücher.example", "a@xn--bcher-kva.example", (1, "domain")),
    ("xn--bcher-kva.example", "a@bücher.example", (1, "domain")),
    ("XN--BCHER-KVA.EXAMPLE", "a@BÜCHER.example", (1, "domain")),
    ("anna@bücher.example", "Anna@XN--BCHER-KVA.example", (1, "sender")),
    ("anna@xn--bcher-kva.example", "anna@Bücher.Example", (1, "sender")),
]


@pytest.mark.parametrize(("from_filter", "header_from", "expected"), CASE_IDNA_CASES)
def test_matching_ignores_case_and_treats_idna_domains_as_their_punycode(
    from_filter: str, header_from: str, expected: tuple[int, str]
) -> None:
    """Filters and senders compare case-insensitively and Unicode domains equal their punycode."""
    decision = RoutingTable([ServerInfo(1, 1, from_filter)], PARAMS).decide(header_from)
    assert (decision.server_id, decision.route) == expected


def test_non_ascii_local_part_is_not_case_folded() -> None:
    """Only ASCII local parts are lower-cased; a non-ASCII mailbox name must match as written."""
    assert normalize_address("Jörg@Example.com") == "Jörg@example.com"
    assert normalize_address("JOHN@Example.com") == "john@example.com"


def test_sender_header_carries_the_punycode_domain() -> None:
    """A kept From is re-rendered with the punycode domain so that ASCII-only servers accept it."""
    table = RoutingTable([ServerInfo(1, 1, "bücher.example")], PARAMS)
    decision = table.decide("Anna <Anna@Bücher.example>")
    assert decision.header_from == '"Anna" <Anna@xn--bcher-kva.example>'
    assert decision.envelope_from == "anna@xn--bcher-kva.example"


def test_unicode_catchall_domain_gives_punycode_system_addresses() -> None:
    """mail.catchall.domain may be stored in Unicode; the derived addresses are punycode."""
    params = RoutingParams("notifications", "Bücher.example")
    assert params.notifications_address == "notifications@xn--bcher-kva.example"
    assert params.bounce_address == "bounce@xn--bcher-kva.example"
    assert params.catchall_address == "catchall@xn--bcher-kva.example"
    table = RoutingTable([ServerInfo(1, 1, "bücher.example")], params)
    assert table.decide("a@other.org").header_from == '"a" <notifications@xn--bcher-kva.example>'


# --------------------------------------------------------------------------------------------
# Display names, header encoding
# --------------------------------------------------------------------------------------------


ENCAPSULATE_CASES = [
    ('"Admin" <admin@gmail.com>', '"Admin" <notifications@example.com>'),
    ("test@unknown-domain.com", '"test" <notifications@example.com>'),
    ("Mixed.Case@x.com", '"Mixed.Case" <notifications@example.com>'),
    ("John Q. Public <jqp@x.com>", '"John Q. Public" <notifications@example.com>'),
    ('"Doe, John" <jd@x.com>', '"Doe, John" <notifications@example.com>'),
    ('"John \\"JJ\\" Doe" <jd@x.com>', '"John \\"JJ\\" Doe" <notifications@example.com>'),
    ('"a@x.com" <fake@y.com>', '"a@x.com" <notifications@example.com>'),
    ("Jörg Müller <jm@x.com>", '"Jörg Müller" <notifications@example.com>'),
    ("=?utf-8?q?J=C3=B6rg?= <j@x.com>", '"Jörg" <notifications@example.com>'),
    ("李雷 <li@x.com>", '"李雷" <notifications@example.com>'),
]


@pytest.mark.parametrize(("original", "expected"), ENCAPSULATE_CASES)
def test_rewritten_from_keeps_the_display_name_or_the_local_part(
    original: str, expected: str
) -> None:
    """The sender's name (or local part when it has none) stays, quoted, on the new address."""
    assert encapsulate(original, "notifications@example.com") == expected


@pytest.mark.parametrize(
    "name", ["Jörg Müller", "李雷", 'Quote " and \\ backslash', "Doe, John", "Ω <x@y>", "a" * 90]
)
def test_display_names_survive_serialisation_with_rfc2047_when_non_ascii(name: str) -> None:
    """A From built here, serialised by policy.default and parsed back, gives the same name."""
    message = EmailMessage(policy=policy.default)
    message["From"] = format_mailbox(name, "notifications@example.com")
    wire = bytes(message)
    assert wire.isascii()
    if not name.isascii():
        assert b"=?utf-8?" in wire
    parsed = BytesParser(policy=policy.default).parsebytes(wire)
    (address,) = parsed["From"].addresses
    assert (address.display_name, address.addr_spec) == (name, "notifications@example.com")


# --------------------------------------------------------------------------------------------
# Reply-To and envelope
# --------------------------------------------------------------------------------------------


def test_reply_to_is_catchall_when_from_was_rewritten() -> None:
    """Replies to a rewritten mail go to the catchall, back into the ERP."""
    decision = RoutingTable(SINGLE, PARAMS).decide("bob@example.com")
    assert decision.reply_to == "catchall@example.com"


def test_a_given_reply_to_is_kept_whether_or_not_from_was_rewritten() -> None:
    """An explicit Reply-To (e.g. a record's alias) always wins."""
    table = RoutingTable(MULTI, MULTI_PARAMS)
    given = '"Sales" <sales+42@example.com>'
    assert table.decide("bob@example.com", reply_to=given).reply_to == given
    assert table.decide("john@example.com", reply_to=given).reply_to == given


def test_reply_to_falls_back_to_the_author_when_there_is_no_catchall() -> None:
    """Without mail.catchall.domain, replies go to the author, never to the notifications box."""
    params = RoutingParams("notifications@example.com", "")
    assert params.catchall_address is None
    table = RoutingTable([ServerInfo(1, 1, "notifications@example.com")], params)
    assert table.decide("Bob <Bob@customer.org>").reply_to == "Bob@customer.org"


ENVELOPE_CASES = [
    ("example.com", "bob@example.com", "bounce@example.com"),
    ("", "bob@customer.org", "bounce@example.com"),
    ("john@example.com", "john@example.com", "john@example.com"),
    ("john@example.com, bounce@example.com", "john@example.com", "bounce@example.com"),
    ("notifications@example.com", "bob@customer.org", "notifications@example.com"),
]


@pytest.mark.parametrize(("from_filter", "header_from", "envelope"), ENVELOPE_CASES)
def test_envelope_is_the_bounce_address_only_when_the_server_accepts_it(
    from_filter: str, header_from: str, envelope: str
) -> None:
    """MAIL FROM is bounce@ if the chosen server's filter accepts it, else the From address."""
    decision = RoutingTable([ServerInfo(1, 1, from_filter)], PARAMS).decide(header_from)
    assert decision.envelope_from == envelope


def test_full_address_aliases_are_used_as_they_are() -> None:
    """mail.default.from and mail.bounce.alias may be full addresses on another domain."""
    params = RoutingParams(
        "Noreply@Mailer.example", "example.com", bounce_alias="rp@mailer.example"
    )
    assert params.notifications_address == "noreply@mailer.example"
    table = RoutingTable([ServerInfo(1, 1, "mailer.example")], params)
    assert row(table.decide("bob@customer.org")) == (
        1,
        "notifications",
        '"bob" <noreply@mailer.example>',
        "rp@mailer.example",
        "catchall@example.com",
    )


def test_without_a_catchall_domain_there_is_no_bounce_address() -> None:
    """With no mail.catchall.domain the envelope is the From address even on an open server."""
    params = RoutingParams("notifications", "")
    decision = RoutingTable([ServerInfo(1, 1, "")], params).decide("Bob <bob@customer.org>")
    assert (decision.envelope_from, decision.reply_to) == ("bob@customer.org", None)


def test_mail_without_author_on_an_open_server_is_sent_as_notifications() -> None:
    """A system mail with no From gets the notifications address even via the catch-all server."""
    decision = RoutingTable([ServerInfo(1, 1, "")], PARAMS).decide("")
    assert row(decision) == (
        1,
        "catch_all_server",
        "notifications@example.com",
        "bounce@example.com",
        "catchall@example.com",
    )


# --------------------------------------------------------------------------------------------
# Weakness 19: no blind fallback
# --------------------------------------------------------------------------------------------


def test_never_sends_through_a_server_whose_filter_accepts_neither_address() -> None:
    """A personal server is never used for someone else's mail; the error names the settings."""
    table = RoutingTable([ServerInfo(1, 1, "jane@example.com")], PARAMS)
    with pytest.raises(RoutingError) as caught:
        table.decide("john@x.com")
    assert str(caught.value) == (
        "No outgoing server accepts john@x.com, and the notifications address "
        "notifications@example.com is not accepted by any server either: add x.com or "
        "john@x.com to a server's FROM Filtering, or set mail.default.from / "
        "mail.catchall.domain so that a server accepts the notifications address."
    )


def test_failure_without_a_notifications_address_says_to_set_the_catchall_domain() -> None:
    """With no mail.catchall.domain the error tells the admin to set it."""
    table = RoutingTable([ServerInfo(1, 1, "jane@example.com")], RoutingParams("notifications", ""))
    with pytest.raises(
        RoutingError, match=r"there is no notifications address \(set mail\.catchall\.domain"
    ):
        table.decide("john@x.com")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (PARAMS, "no outgoing server accepts the notifications address notifications@example.com"),
        (
            RoutingParams("notifications", ""),
            "there is no notifications address: set mail.catchall",
        ),
    ],
)
def test_mail_without_author_fails_with_the_setting_to_change(
    params: RoutingParams, expected: str
) -> None:
    """A system mail with no From and no server for notifications fails, naming the parameters."""
    with pytest.raises(RoutingError, match=expected):
        RoutingTable([ServerInfo(1, 1, "jane@example.com")], params).decide("")


def test_no_servers_at_all_fails_cleanly() -> None:
    """An empty server list gives a RoutingError, not an IndexError."""
    with pytest.raises(RoutingError, match="No outgoing server accepts"):
        RoutingTable([], PARAMS).decide("a@b.org")


def test_a_server_with_an_invalid_stored_filter_is_skipped_and_named() -> None:
    """One bad legacy filter does not stop other mail; the error explains why it was skipped."""
    servers = [
        ServerInfo(1, 1, "*.example.com", name="Broken"),
        ServerInfo(2, 2, "jane@example.com"),
    ]
    table = RoutingTable(servers, PARAMS)
    assert table.invalid_filters.keys() == {1}
    assert table.decide("jane@example.com").server_id == 2
    with pytest.raises(
        RoutingError, match=r"Skipped for an invalid FROM Filtering: 'Broken' \(#1\)"
    ):
        table.decide("bob@example.com")


# --------------------------------------------------------------------------------------------
# Mass mailing and forced servers
# --------------------------------------------------------------------------------------------


def test_dedicated_server_is_used_even_when_a_personal_server_matches() -> None:
    """A mailing from john@ still goes through the Dedicated Server, From untouched."""
    decision = RoutingTable(MULTI, MULTI_PARAMS).decide(
        "John <john@example.com>", purpose="mass_mailing"
    )
    assert row(decision) == (
        4,
        "mass_mailing",
        '"John" <john@example.com>',
        "bounce@example.com",
        None,
    )


def test_dedicated_server_that_rejects_the_sender_fails_instead_of_rewriting() -> None:
    """From is never rewritten for mailings, so a filter that refuses the sender is an error."""
    marketing = ServerInfo(4, 1, "news.example.com", name="Marketing")
    table = RoutingTable([NOTIFICATIONS, marketing], MULTI_PARAMS)
    assert table.decide("a@news.example.com", purpose="mass_mailing").server_id == 4
    with pytest.raises(RoutingError, match=r"empty its FROM Filtering or add example\.com"):
        table.decide("bob@example.com", purpose="mass_mailing")


@pytest.mark.parametrize(
    ("servers", "state"),
    [
        ([NOTIFICATIONS, ServerInfo(4, 1, "", active=False)], "is archived"),
        ([NOTIFICATIONS], "does not exist"),
    ],
)
def test_missing_or_archived_dedicated_server_fails_naming_general_settings(
    servers: list[ServerInfo], state: str
) -> None:
    """Mailings never fall back silently when the Dedicated Server is gone."""
    with pytest.raises(RoutingError, match=f"Dedicated Server .*General Settings.* #4 {state}"):
        RoutingTable(servers, MULTI_PARAMS).decide("news@example.com", purpose="mass_mailing")


def test_mass_mailing_needs_an_author() -> None:
    """A mailing without From is refused as invalid input."""
    with pytest.raises(ValidationFailed):
        RoutingTable(MULTI, MULTI_PARAMS).decide("", purpose="mass_mailing")


def test_mailing_naming_another_server_than_the_dedicated_one_fails() -> None:
    """The General Settings choice is the only one for mailings; a conflicting server is refused."""
    table = RoutingTable(MULTI, MULTI_PARAMS)
    with pytest.raises(RoutingError, match="remove the mailing's own server"):
        table.decide("news@example.com", purpose="mass_mailing", forced_server_id=3)
    assert table.decide("n@example.com", purpose="mass_mailing", forced_server_id=4).route == (
        "mass_mailing"
    )


FORCED_CASES = [
    (
        "forced server accepting the sender keeps From",
        1,
        "john@example.com",
        (1, "forced", "john@example.com"),
    ),
    (
        "forced server accepting only notifications rewrites From",
        3,
        "Bob <bob@customer.org>",
        (3, "forced", '"Bob" <notifications@example.com>'),
    ),
    (
        "forced reserved server is allowed because it was chosen",
        4,
        "bob@customer.org",
        (4, "forced", "bob@customer.org"),
    ),
]


@pytest.mark.parametrize(
    ("server_id", "header_from", "expected"),
    [case[1:] for case in FORCED_CASES],
    ids=[case[0] for case in FORCED_CASES],
)
def test_forced_server_is_used_only_with_an_address_its_filter_accepts(
    server_id: int, header_from: str, expected: tuple[object, ...]
) -> None:
    """A per-mail server is honoured, with From kept or rewritten to what its filter accepts."""
    decision = RoutingTable(MULTI, MULTI_PARAMS).decide(header_from, forced_server_id=server_id)
    assert (decision.server_id, decision.route, decision.header_from) == expected


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        (MULTI, "'John' \\(#1\\) chosen for this mail accepts neither bob@customer.org"),
        (
            [ServerInfo(1, 1, "john@example.com", active=False)],
            "#1 chosen for this mail is archived",
        ),
        ([], "#1 chosen for this mail does not exist"),
    ],
)
def test_forced_server_that_cannot_send_fails_with_the_reason(
    servers: list[ServerInfo], message: str
) -> None:
    """A forced server that refuses both addresses, is archived or is gone is an error."""
    with pytest.raises(RoutingError, match=message):
        RoutingTable(servers, MULTI_PARAMS).decide("bob@customer.org", forced_server_id=1)


# --------------------------------------------------------------------------------------------
# Stored decisions and retries
# --------------------------------------------------------------------------------------------


def test_a_stored_decision_round_trips_and_rechecks_for_a_retry() -> None:
    """The decision saved on the queue row is rebuilt identically and still valid."""
    table = RoutingTable(MULTI, MULTI_PARAMS)
    for header_from in ("John <john@example.com>", "Bob <bob@example.com>", ""):
        decision = table.decide(header_from)
        restored = Decision.from_record(decision.as_record())
        assert restored == decision
        assert table.recheck(restored) is restored


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        ([JANE, NOTIFICATIONS], "no longer exists"),
        ([ServerInfo(1, 10, "john@example.com", active=False), NOTIFICATIONS], "is archived"),
        (
            [ServerInfo(1, 10, "jane@example.com"), NOTIFICATIONS],
            "no longer accepts john@example.com",
        ),
        ([ServerInfo(1, 10, "john@example.com", mass_mailing_only=True)], "now reserved"),
    ],
)
def test_recheck_refuses_a_stored_server_that_can_no_longer_send(
    servers: list[ServerInfo], message: str
) -> None:
    """A retry does not use a server that was deleted, archived, narrowed or reserved since."""
    decision = RoutingTable(MULTI, MULTI_PARAMS).decide("john@example.com")
    with pytest.raises(RoutingError, match=message):
        RoutingTable(servers, MULTI_PARAMS).recheck(decision)


@pytest.mark.parametrize(
    "record",
    [
        {"server_id": 1, "route": "sender", "header_from": "a@b.org"},
        {"server_id": "1", "route": "sender", "header_from": "a@b.org", "envelope_from": "a@b.org"},
        {"server_id": 1, "route": "wrong", "header_from": "a@b.org", "envelope_from": "a@b.org"},
        {
            "server_id": 1,
            "route": "sender",
            "header_from": "a@b.org\r\nBcc: x@y.org",
            "envelope_from": "a@b.org",
        },
        {
            "server_id": 1,
            "route": "sender",
            "header_from": "a@b.org",
            "envelope_from": "a@b.org",
            "reply_to": "x\n",
        },
    ],
)
def test_a_tampered_stored_decision_is_refused(record: dict[str, object]) -> None:
    """A stored decision with a missing key, bad type, unknown route or injection is invalid."""
    with pytest.raises(ValidationFailed):
        Decision.from_record(record)


# --------------------------------------------------------------------------------------------
# Malformed input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header_from",
    [
        "john@example.com\r\nBcc: victim@x.org",
        "John <john@example.com>\nX-Injected: 1",
        "john@example.com\x00",
        "john@example.com\u2028",
    ],
)
def test_header_injection_in_from_is_refused(header_from: str) -> None:
    """Line breaks or control characters in From raise ValidationFailed, never reach a header."""
    with pytest.raises(ValidationFailed) as caught:
        RoutingTable(SINGLE, PARAMS).decide(header_from)
    assert caught.value.field == "header_from"


def test_header_injection_in_reply_to_is_refused() -> None:
    """A Reply-To with a line break is refused."""
    with pytest.raises(ValidationFailed) as caught:
        RoutingTable(SINGLE, PARAMS).decide("a@b.org", reply_to="x@y.org\r\nBcc: z@w.org")
    assert caught.value.field == "reply_to"


@pytest.mark.parametrize(
    "header_from",
    [
        "no-at-sign",
        "x@",
        "@example.com",
        "a@b@c",
        "a@x.com, b@y.com",
        "John john@x.com",
        "a@[1.2.3.4]",
        "a@localhost",
        "<>",
        "a@-bad-.com",
    ],
)
def test_malformed_from_is_refused(header_from: str) -> None:
    """A From that is not exactly one name@domain address raises ValidationFailed."""
    with pytest.raises(ValidationFailed):
        RoutingTable(SINGLE, PARAMS).decide(header_from)
    assert normalize_address(header_from) is None


def test_unknown_purpose_is_refused() -> None:
    """Only transactional and mass_mailing purposes exist."""
    with pytest.raises(ValidationFailed):
        RoutingTable(SINGLE, PARAMS).decide("a@b.org", purpose="newsletter")  # type: ignore[arg-type]


def test_duplicate_server_ids_are_refused() -> None:
    """Two servers with one id is a bug in the caller, reported at build time."""
    with pytest.raises(ValidationFailed):
        RoutingTable([ServerInfo(1, 1, ""), ServerInfo(1, 2, "x.org")], PARAMS)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"catchall_domain": "not a domain"}, "mail.catchall.domain"),
        ({"catchall_domain": "example.com", "default_from": "bad local"}, "mail.default.from"),
        ({"catchall_domain": "example.com", "default_from": "a@b@c"}, "mail.default.from"),
        ({"catchall_domain": "example.com", "bounce_alias": "x\r\ny"}, "mail.bounce.alias"),
    ],
)
def test_invalid_parameters_are_refused_when_built(kwargs: dict[str, str], field: str) -> None:
    """Bad System Parameters fail when RoutingParams is built, naming the parameter."""
    with pytest.raises(ValidationFailed) as caught:
        RoutingParams(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


PARSE_FILTER_CASES = [
    ("", (set(), set())),
    (" , ,", (set(), set())),
    ("example.com", (set(), {"example.com"})),
    (" John@Example.com , EXAMPLE.org ", ({"john@example.com"}, {"example.org"})),
    (
        "bücher.example, anna@Bücher.example",
        ({"anna@xn--bcher-kva.example"}, {"xn--bcher-kva.example"}),
    ),
    ("a.com,,b.com", (set(), {"a.com", "b.com"})),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_FILTER_CASES)
def test_parse_filter_normalises_addresses_and_domains(
    text: str, expected: tuple[set[str], set[str]]
) -> None:
    """Filter parts are trimmed, lower-cased, punycoded and split into addresses and domains."""
    assert parse_filter(text) == (frozenset(expected[0]), frozenset(expected[1]))


@pytest.mark.parametrize(
    ("text", "bad_part"),
    [
        ("example.com, @example.org", "@example.org"),
        ("*.example.com", "*.example.com"),
        ('"John" <john@example.com>', '"John" <john@example.com>'),
        ("example.com, not a domain", "not a domain"),
        ("a@b@c.com", "a@b@c.com"),
        ("example", "example"),
        ("xn--zz-invalid-punycode-.com", "xn--zz-invalid-punycode-.com"),
    ],
)
def test_parse_filter_names_the_bad_part(text: str, bad_part: str) -> None:
    """A bad filter part raises ValidationFailed on from_filter quoting that part."""
    with pytest.raises(ValidationFailed) as caught:
        parse_filter(text)
    assert caught.value.field == "from_filter"
    assert f"'{bad_part}'" in caught.value.message


def test_parse_filter_refuses_line_breaks() -> None:
    """A filter with a line break is refused like any header injection."""
    with pytest.raises(ValidationFailed):
        parse_filter("example.com\r\nexample.org")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Name <NaMe@DoMaIn.CoM>", "name@domain.com"),
        ('"admin@x.com" <fake@y.com>', "fake@y.com"),
        ("  spaced@x.com  ", "spaced@x.com"),
        ("a@Bücher.Example", "a@xn--bcher-kva.example"),
        ('"quoted local"@x.com', '"quoted local"@x.com'),
    ],
)
def test_normalize_address_drops_the_name_and_lowers_case(text: str, expected: str) -> None:
    """normalize_address keeps only the address: lower-case ASCII local part, punycode domain."""
    assert normalize_address(text) == expected


# --------------------------------------------------------------------------------------------
# Cross-check against a naive reference and cost
# --------------------------------------------------------------------------------------------


def reference_decide(
    servers: list[ServerInfo], params: RoutingParams, header_from: str, purpose: str
) -> tuple[int, str, str, str, str | None] | str | None:
    """The rules as linear scans (None: no server may send; "invalid": refused input)."""
    notif = params.notifications_address
    sender = normalize_address(header_from) if header_from else None

    def accepts(server: ServerInfo, address: str) -> bool:
        addresses, domains = parse_filter(server.from_filter)
        if not addresses and not domains:
            return True
        return address in addresses or address.split("@")[1] in domains

    def envelope(server: ServerInfo, address: str) -> str:
        bounce = params.bounce_address
        return bounce if bounce and accepts(server, bounce) else address

    def kept(server: ServerInfo, route: str) -> tuple[int, str, str, str, str | None]:
        assert sender is not None
        return (server.id, route, format_mailbox_from(header_from), envelope(server, sender), None)

    def rewritten(server: ServerInfo, route: str) -> tuple[int, str, str, str, str | None]:
        assert notif is not None
        header = encapsulate(header_from, notif) if header_from else notif
        reply = params.catchall_address or (
            header_from_address(header_from) if header_from else None
        )
        return (server.id, route, header, envelope(server, notif), reply)

    ordered = sorted(servers, key=lambda s: (s.priority, s.id))
    if purpose == "mass_mailing" and params.mass_mailing_server_id is not None:
        for server in ordered:
            if server.id == params.mass_mailing_server_id and server.active:
                if not sender:
                    return "invalid"
                return kept(server, "mass_mailing") if accepts(server, sender or "") else None
        return None
    usable = [
        s
        for s in ordered
        if s.active and not s.mass_mailing_only and s.id != params.mass_mailing_server_id
    ]
    if sender:
        for server in usable:
            if sender in parse_filter(server.from_filter)[0]:
                return kept(server, "sender")
        for server in usable:
            if sender.split("@")[1] in parse_filter(server.from_filter)[1]:
                return kept(server, "domain")
    if notif:
        for server in usable:
            if notif in parse_filter(server.from_filter)[0]:
                return rewritten(server, "notifications")
        for server in usable:
            if notif.split("@")[1] in parse_filter(server.from_filter)[1]:
                return rewritten(server, "notifications")
    for server in usable:
        if not server.from_filter.strip():
            if sender:
                return kept(server, "catch_all_server")
            return rewritten(server, "catch_all_server") if notif else None
    return None


def header_from_address(header_from: str) -> str:
    """The From address as written, with a punycode domain (what the table puts in Reply-To)."""
    local, _, domain = normalize_address_keep_case(header_from).rpartition("@")
    return f"{local}@{domain}"


def normalize_address_keep_case(header_from: str) -> str:
    """The address of ``header_from`` with the local part as written and a punycode domain."""
    from email.headerregistry import Address as _Address

    (mailbox,) = policy.default.header_factory("from", header_from).addresses  # type: ignore[attr-defined]
    domain = mailbox.domain.lower().encode("idna").decode("ascii")
    return _Address(username=mailbox.username, domain=domain).addr_spec


def format_mailbox_from(header_from: str) -> str:
    """The kept From header as the table renders it: quoted name, punycode domain."""
    (mailbox,) = policy.default.header_factory("from", header_from).addresses  # type: ignore[attr-defined]
    return format_mailbox(mailbox.display_name, normalize_address_keep_case(header_from))


ADDRESS_POOL = [
    "john@example.com",
    "JOHN@Example.com",
    "jane@example.com",
    "notifications@example.com",
    "bounce@example.com",
    "anna@bücher.example",
    "anna@xn--bcher-kva.example",
    "x@customer.org",
]
DOMAIN_POOL = [
    "example.com",
    "EXAMPLE.COM",
    "customer.org",
    "bücher.example",
    "xn--bcher-kva.example",
    "other.net",
]
SENDER_POOL = [
    "",
    "john@example.com",
    '"John" <John@Example.com>',
    "Jane <jane@example.com>",
    "bob@example.com",
    "Anna <anna@XN--BCHER-KVA.example>",
    "someone@bücher.example",
    "x@customer.org",
    "Zoë <zoe@nowhere.io>",
    "notifications@example.com",
]


def random_filter(rng: random.Random) -> str:
    """A filter of 0-3 parts drawn from pools that overlap in case and IDNA spelling."""
    parts = rng.sample(ADDRESS_POOL + DOMAIN_POOL, rng.choice([0, 0, 1, 1, 2, 3]))
    return ", ".join(parts)


def test_table_agrees_with_a_naive_reference_on_random_server_sets() -> None:
    """Over thousands of random configurations the indexed table decides like a linear scan."""
    rng = random.Random(20240519)
    compared = 0
    for _ in range(300):
        servers = [
            ServerInfo(
                id=server_id,
                priority=rng.randint(0, 3),
                from_filter=random_filter(rng),
                active=rng.random() > 0.2,
                mass_mailing_only=rng.random() < 0.15,
            )
            for server_id in rng.sample(range(1, 50), rng.randint(0, 7))
        ]
        params = RoutingParams(
            default_from=rng.choice(["notifications", "notifications", "noreply@customer.org"]),
            catchall_domain=rng.choice(["example.com", "bücher.example", ""]),
            mass_mailing_server_id=rng.choice([None, None, *(s.id for s in servers)]),
        )
        table = RoutingTable(rng.sample(servers, len(servers)), params)
        for header_from in SENDER_POOL:
            for purpose in ("transactional", "mass_mailing"):
                expected = reference_decide(servers, params, header_from, purpose)
                try:
                    got: tuple[object, ...] | str | None = row(
                        table.decide(header_from, purpose=purpose)  # type: ignore[arg-type]
                    )
                except RoutingError:
                    got = None
                except ValidationFailed:
                    got = "invalid"
                assert got == expected, (servers, params, header_from, purpose)
                compared += 1
    assert compared == 300 * len(SENDER_POOL) * 2


@functools.cache
def big_table(count: int) -> RoutingTable:
    """A table over ``count`` + 4 servers, built once per size for all cost tests."""
    return RoutingTable(build_servers(count), PARAMS)


def build_servers(count: int) -> list[ServerInfo]:
    """``count`` servers: personal mailboxes on many domains, plus domain and open servers."""
    servers = [ServerInfo(i, i % 7, f"user{i}@d{i % 97}.example") for i in range(1, count + 1)]
    servers.append(ServerInfo(count + 1, 5, "example.com"))
    servers.append(ServerInfo(count + 2, 5, "notifications@example.com"))
    servers.append(ServerInfo(count + 3, 5, ""))
    servers.append(ServerInfo(count + 4, 5, "", mass_mailing_only=True))
    return servers


@pytest.mark.parametrize(
    ("header_from", "purpose", "forced"),
    [
        ("user1@d1.example", "transactional", None),
        ("someone@example.com", "transactional", None),
        ("someone@customer.org", "transactional", None),
        ("", "transactional", None),
        ("someone@customer.org", "mass_mailing", None),
        ("user1@d1.example", "transactional", 1),
    ],
)
def test_lookup_cost_does_not_grow_with_the_number_of_servers(
    header_from: str, purpose: str, forced: int | None
) -> None:
    """Deciding examines the same number of servers for 10 as for 20,000 servers."""
    costs = set()
    for count in (10, 1_000, 20_000):
        table = big_table(count)
        before = table.servers_examined
        table.decide(header_from, purpose=purpose, forced_server_id=forced)  # type: ignore[arg-type]
        costs.add(table.servers_examined - before)
    assert len(costs) == 1
    assert costs.pop() <= 3


def test_failure_cost_does_not_grow_with_the_number_of_servers() -> None:
    """Even the error path, with its hints, looks at a constant number of servers."""
    costs = set()
    for count in (10, 20_000):
        servers = [
            ServerInfo(i, 1, f"user{i}@x.example", mass_mailing_only=i % 2 == 0)
            for i in range(1, count)
        ]
        table = RoutingTable(servers, PARAMS)
        before = table.servers_examined
        with pytest.raises(RoutingError):
            table.decide("nobody@customer.org")
        costs.add(table.servers_examined - before)
    assert len(costs) == 1
