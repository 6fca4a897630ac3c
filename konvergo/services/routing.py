"""Outgoing server selection and From/envelope rewriting, as pure functions.

Nothing here touches the database, the network or Django: the store turns its server rows and
System Parameters into :class:`ServerInfo` and :class:`RoutingParams`, builds one
:class:`RoutingTable`, and asks it for a :class:`Decision` per mail. The decision is stored on the
queue row (:meth:`Decision.as_record`) so that a retry goes through the same server
(:meth:`RoutingTable.recheck`) instead of being routed again.

Rules, in order (transactional mail, and mass mailing when no Dedicated Server is chosen):

1. a server whose FROM Filtering lists the sender's exact address (across all servers);
2. a server whose FROM Filtering lists the sender's domain;
3. a server that accepts the notifications address (``mail.default.from``, joined to
   ``mail.catchall.domain`` when it is only a local part): the From header becomes
   ``"Sender Name" <notifications@domain>`` and Reply-To the catchall address;
4. a server with an empty FROM Filtering (it accepts every sender, so From is kept);
5. otherwise the mail fails with a :class:`RoutingError` naming the setting to change.

Within a step the lowest Priority wins, then the lowest id. Addresses compare case-insensitively
(the local part only when it is ASCII, as mailbox names with non-ASCII letters are not
case-folded reliably by servers) and IDNA domains equal their punycode.

Unlike Odoo (weakness 19 in the research notes) there is no "any server at all" fallback: a
server is only used when its filter accepts the From address it will send with. Servers reserved
for mass mailing (the "Mass Mailing Only" flag, or the Dedicated Server chosen in General
Settings) never take other mail by rule; they are used only when named explicitly.
"""

from __future__ import annotations

import email.utils
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email import policy
from email.errors import InvalidHeaderDefect
from email.headerregistry import Address
from typing import Any, Final, Literal, get_args

from konvergo.errors import RoutingError, ValidationFailed
from konvergo.services.parameters import DOMAIN_RE, LOCAL_PART_RE

Purpose = Literal["transactional", "mass_mailing"]
Route = Literal["sender", "domain", "notifications", "catch_all_server", "mass_mailing", "forced"]

PURPOSES: Final[frozenset[str]] = frozenset(get_args(Purpose))
ROUTES: Final[frozenset[str]] = frozenset(get_args(Route))

#: Setting names as the admin sees them; every RoutingError names one of these.
FROM_FILTER_LABEL: Final = "FROM Filtering"
DEDICATED_LABEL: Final = "Dedicated Server for mass mailings (General Settings)"
MASS_ONLY_LABEL: Final = "Mass Mailing Only"

# Line and paragraph separators end a header line for some parsers, and NUL truncates C strings:
# any of them in an address or display name is a header-injection attempt, never a typo.
_FORBIDDEN = frozenset("\r\n\0\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")

# A bare dot-atom address needs no RFC 5322 parsing; the fast path keeps building a table of
# thousands of servers cheap. Anything else (names, quotes, comments) goes to the full parser.
_BARE_ADDRESS_RE = re.compile(
    r"^([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@([^\s@<>()\[\]\\,;:\"]+)$"
)


# --------------------------------------------------------------------------------------------
# Normalisation helpers
# --------------------------------------------------------------------------------------------


def _reject_injection(field_name: str, text: str) -> None:
    """Refuse control characters that could start a new header line."""
    if any(ch in _FORBIDDEN or (unicodedata.category(ch) == "Cc" and ch != "\t") for ch in text):
        raise ValidationFailed(
            field_name,
            f"{text!r} contains a line break or control character; an address must fit on "
            "one header line.",
        )


def normalize_domain(text: str) -> str | None:
    """``text`` as a lower-case ASCII (punycode) domain, or None when it is not a domain."""
    text = text.strip().lower()
    if not text or "@" in text:
        return None
    try:
        ascii_domain = text.encode("idna").decode("ascii")
        # Decoding back validates existing "xn--" labels, which encoding passes through unchecked.
        ascii_domain.encode("ascii").decode("idna")
    except UnicodeError:
        return None
    ascii_domain = ascii_domain.lower()
    return ascii_domain if DOMAIN_RE.match(ascii_domain) else None


@dataclass(frozen=True)
class ParsedAddress:
    """One mailbox taken from a header value: its display name, local part and domain."""

    display_name: str
    local_part: str  # as written (case kept), for display
    domain: str  # lower-case punycode

    @property
    def address(self) -> str:
        """The normalised address: ASCII local parts lower-cased, domain lower-case punycode."""
        local = self.local_part.lower() if self.local_part.isascii() else self.local_part
        return Address(username=local, domain=self.domain).addr_spec

    @property
    def written_address(self) -> str:
        """The address as written, but with the punycode domain (what a header should carry)."""
        return Address(username=self.local_part, domain=self.domain).addr_spec


def parse_address(text: str, field_name: str = "header_from") -> ParsedAddress:
    """Parse exactly one mailbox from ``text``; anything else raises :class:`ValidationFailed`."""
    _reject_injection(field_name, text)
    text = text.strip()
    if not text:
        raise ValidationFailed(field_name, "The address is empty.")
    bare = _BARE_ADDRESS_RE.match(text)
    if bare is not None:
        bare_domain = normalize_domain(bare.group(2))
        if bare_domain is None:
            raise ValidationFailed(
                field_name, f"{text!r} is not a valid email address (name@domain expected)."
            )
        return ParsedAddress("", bare.group(1), bare_domain)
    try:
        header = policy.default.header_factory("from", text)
        addresses = header.addresses  # type: ignore[attr-defined]
        defects = header.defects
    except (IndexError, ValueError, TypeError) as exc:  # the stdlib parser raises on some junk
        raise ValidationFailed(field_name, f"{text!r} is not an email address.") from exc
    if len(addresses) != 1:
        raise ValidationFailed(
            field_name,
            f"{text!r} must hold exactly one email address, found {len(addresses)}.",
        )
    # Obsolete-syntax and non-ASCII-local-part defects are harmless; invalid ones mean the
    # parser guessed (e.g. 'John john@x.com' became the local part 'John john').
    if any(isinstance(defect, InvalidHeaderDefect) for defect in defects):
        raise ValidationFailed(field_name, f"{text!r} is not a valid email address.")
    mailbox: Address = addresses[0]
    domain = normalize_domain(mailbox.domain) if mailbox.domain else None
    if not mailbox.username or domain is None:
        raise ValidationFailed(
            field_name, f"{text!r} is not a valid email address (name@domain expected)."
        )
    return ParsedAddress(mailbox.display_name or "", mailbox.username, domain)


def normalize_address(text: str) -> str | None:
    """The single address in ``text``, normalised; None when there is not exactly one.

    The display name is dropped, the domain is lower-case punycode, an ASCII local part is
    lower-cased. Header injection (line breaks) still raises :class:`ValidationFailed`.
    """
    try:
        return parse_address(text).address
    except ValidationFailed:
        _reject_injection("header_from", text)
        return None


def parse_filter(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """Split a FROM Filtering value into (addresses, domains), normalised.

    Parts are comma-separated and trimmed; empty parts are ignored, so a value of only commas
    and blanks is an empty filter (which accepts every sender). A bad part raises
    :class:`ValidationFailed` on ``from_filter`` naming that part.
    """
    _reject_injection("from_filter", text)
    addresses: set[str] = set()
    domains: set[str] = set()
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        if part.startswith("@") or "*" in part:
            raise ValidationFailed(
                "from_filter",
                f"'{part}' in FROM Filtering: write a domain without '@' or wildcards "
                "(e.g. example.com); subdomains must be listed one by one.",
            )
        if "@" in part:
            # A filter lists mailboxes, not header values: no display names or angle brackets.
            if any(ch in part for ch in '<>" '):
                raise ValidationFailed(
                    "from_filter",
                    f"'{part}' in FROM Filtering: write the bare address "
                    "(e.g. john@example.com), without a name or angle brackets.",
                )
            try:
                addresses.add(parse_address(part, "from_filter").address)
            except ValidationFailed as exc:
                raise ValidationFailed(
                    "from_filter",
                    f"'{part}' in FROM Filtering is not a valid email address.",
                ) from exc
        else:
            domain = normalize_domain(part)
            if domain is None:
                raise ValidationFailed(
                    "from_filter",
                    f"'{part}' in FROM Filtering is neither an email address nor a domain "
                    "(e.g. john@example.com or example.com).",
                )
            domains.add(domain)
    return frozenset(addresses), frozenset(domains)


def format_mailbox(display_name: str, address: str) -> str:
    """``"Name" <address>`` (the name always quoted, as Outlook shows it), or the bare address.

    The result is a unicode header value for :data:`email.policy.default`, which applies
    RFC 2047 to non-ASCII names when the message is serialised.
    """
    _reject_injection("display_name", display_name)
    mailbox = Address(display_name=display_name, addr_spec=address)  # validates the addr-spec
    if not mailbox.display_name:
        return mailbox.addr_spec
    return f'"{email.utils.quote(mailbox.display_name)}" <{mailbox.addr_spec}>'


def encapsulate(original_from: str, new_address: str) -> str:
    """Keep the sender's name but send from ``new_address``: ``"Name" <new_address>``.

    The name is the display name of ``original_from``, or its local part when it has none
    (``john@x.com`` becomes ``"john" <notifications@example.com>``).
    """
    original = parse_address(original_from)
    return format_mailbox(original.display_name or original.local_part, new_address)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerInfo:
    """What routing needs to know about one outgoing server (the store converts its rows).

    ``priority`` works like Odoo's sequence: the lowest value is preferred.
    """

    id: int
    priority: int
    from_filter: str
    active: bool = True
    mass_mailing_only: bool = False
    name: str = ""

    @property
    def label(self) -> str:
        """How messages name the server: ``'John' (#3)``."""
        return f"'{self.name}' (#{self.id})" if self.name else f"#{self.id}"


def _alias_address(key: str, alias: str, domain: str) -> str | None:
    """``alias@domain``, or ``alias`` itself when it is already a full address; None if unset."""
    alias = alias.strip()
    if not alias:
        return None
    if "@" in alias:
        return parse_address(alias, key).address
    if not LOCAL_PART_RE.match(alias):
        raise ValidationFailed(
            key, f"'{alias}' must be a local part such as 'notifications' or a full address."
        )
    if not domain.strip():
        return None
    normal = normalize_domain(domain)
    if normal is None:
        raise ValidationFailed("mail.catchall.domain", f"'{domain}' is not a domain.")
    return Address(username=alias.lower(), domain=normal).addr_spec


@dataclass(frozen=True)
class RoutingParams:
    """The System Parameters and General Settings that routing depends on."""

    default_from: str = "notifications"  # mail.default.from: local part or full address
    catchall_domain: str = ""  # mail.catchall.domain
    bounce_alias: str = "bounce"  # mail.bounce.alias
    catchall_alias: str = "catchall"  # mail.catchall.alias
    mass_mailing_server_id: int | None = None  # Dedicated Server for mass mailings

    def __post_init__(self) -> None:
        # Fail when the parameters are built, not on the first mail that needs them.
        _ = (self.notifications_address, self.bounce_address, self.catchall_address)

    @property
    def notifications_address(self) -> str | None:
        """The notifications sender; None while mail.catchall.domain is needed but unset."""
        return _alias_address("mail.default.from", self.default_from, self.catchall_domain)

    @property
    def bounce_address(self) -> str | None:
        """The envelope sender for bounces (mail.bounce.alias at mail.catchall.domain)."""
        return _alias_address("mail.bounce.alias", self.bounce_alias, self.catchall_domain)

    @property
    def catchall_address(self) -> str | None:
        """Where replies to rewritten mail go (mail.catchall.alias at mail.catchall.domain)."""
        return _alias_address("mail.catchall.alias", self.catchall_alias, self.catchall_domain)


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """Which server sends a mail, and the From, MAIL FROM and Reply-To it must carry."""

    server_id: int
    route: Route
    header_from: str  # the From header value (unicode; policy.default encodes it)
    envelope_from: str  # the bare MAIL FROM / Return-Path address
    reply_to: str | None  # the Reply-To header value, None to send none

    def as_record(self) -> dict[str, Any]:
        """The decision as JSON-ready values, to store on the queue row."""
        return {
            "server_id": self.server_id,
            "route": self.route,
            "header_from": self.header_from,
            "envelope_from": self.envelope_from,
            "reply_to": self.reply_to,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Decision:
        """Rebuild a stored decision; a tampered or truncated record raises ValidationFailed."""
        try:
            server_id, route = record["server_id"], record["route"]
            header_from, envelope_from = record["header_from"], record["envelope_from"]
            reply_to = record.get("reply_to")
        except KeyError as exc:
            raise ValidationFailed("routing", f"Stored routing lacks {exc.args[0]!r}.") from exc
        if not isinstance(server_id, int) or isinstance(server_id, bool) or route not in ROUTES:
            raise ValidationFailed("routing", "Stored routing has an invalid server or route.")
        if not isinstance(header_from, str) or not isinstance(envelope_from, str):
            raise ValidationFailed("routing", "Stored routing has an invalid From.")
        if reply_to is not None and not isinstance(reply_to, str):
            raise ValidationFailed("routing", "Stored routing has an invalid Reply-To.")
        for name, value in (("header_from", header_from), ("envelope_from", envelope_from)):
            parse_address(value, name)
        if reply_to is not None:
            _reject_injection("reply_to", reply_to)
        return cls(server_id, route, header_from, envelope_from, reply_to)


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Server:
    """A server with its filter parsed once."""

    info: ServerInfo
    addresses: frozenset[str]
    domains: frozenset[str]

    @property
    def open(self) -> bool:
        """An empty filter accepts every sender."""
        return not self.addresses and not self.domains

    def accepts(self, address: str) -> bool:
        """Whether the filter accepts the normalised ``address``."""
        if self.open:
            return True
        return address in self.addresses or address.rpartition("@")[2] in self.domains


def _better(candidate: _Server, current: _Server | None) -> bool:
    """Lowest Priority wins, then lowest id (so the choice never depends on input order)."""
    if current is None:
        return True
    return (candidate.info.priority, candidate.info.id) < (current.info.priority, current.info.id)


@dataclass
class _Index:
    """The best server per exact address and per domain, and the best open server."""

    by_address: dict[str, _Server] = field(default_factory=dict)
    by_domain: dict[str, _Server] = field(default_factory=dict)
    open: list[_Server] = field(default_factory=list)

    def add(self, server: _Server) -> None:
        for address in server.addresses:
            if _better(server, self.by_address.get(address)):
                self.by_address[address] = server
        for domain in server.domains:
            if _better(server, self.by_domain.get(domain)):
                self.by_domain[domain] = server
        if server.open:
            self.open.append(server)

    def finish(self) -> None:
        self.open.sort(key=lambda s: (s.info.priority, s.info.id))


@dataclass(frozen=True)
class _Mail:
    """One mail's From, parsed once per decision."""

    original: str
    sender: ParsedAddress | None  # None when the mail has no author (system mail)


class RoutingTable:
    """Routing decisions for one set of servers and parameters; build once, ask many times.

    Building is linear in the total number of filter parts; each :meth:`decide` is a constant
    number of dict lookups whatever the number of servers. ``servers_examined`` counts the
    servers the calls looked at (a diagnostic for tests and profiling; not synchronised).
    """

    def __init__(self, servers: Iterable[ServerInfo], params: RoutingParams) -> None:
        self.params = params
        self.notifications_address = params.notifications_address
        self.bounce_address = params.bounce_address
        self.catchall_address = params.catchall_address
        self.servers_examined = 0
        self._servers: dict[int, _Server] = {}
        #: Servers left out because their stored filter does not parse: id → reason.
        self.invalid_filters: dict[int, str] = {}
        self._usable = _Index()  # active, not reserved: what rules 1-4 may pick
        self._reserved = _Index()  # active but reserved for mass mailing (for error hints)
        self._archived = _Index()  # inactive (for error hints)
        for info in servers:
            if info.id in self._servers or info.id in self.invalid_filters:
                raise ValidationFailed("servers", f"Server id {info.id} is listed twice.")
            try:
                addresses, domains = parse_filter(info.from_filter)
            except ValidationFailed as exc:
                # One bad legacy row must not stop all mail; it is skipped and named in errors.
                self.invalid_filters[info.id] = f"{info.label}: {exc.message}"
                continue
            server = _Server(info, addresses, domains)
            self._servers[info.id] = server
            if not info.active:
                self._archived.add(server)
            elif self.is_reserved(info):
                self._reserved.add(server)
            else:
                self._usable.add(server)
        for index in (self._usable, self._reserved, self._archived):
            index.finish()

    # -- public -------------------------------------------------------------------------------

    def is_reserved(self, info: ServerInfo) -> bool:
        """Reserved for mass mailing: flagged Mass Mailing Only, or the Dedicated Server."""
        return info.mass_mailing_only or info.id == self.params.mass_mailing_server_id

    def decide(
        self,
        header_from: str,
        *,
        purpose: Purpose = "transactional",
        forced_server_id: int | None = None,
        reply_to: str | None = None,
    ) -> Decision:
        """Choose the server for a mail from ``header_from`` ('' for a mail with no author).

        ``forced_server_id`` is an explicit per-mail choice (e.g. a template's server): it is
        used even when reserved, but only if its filter accepts the sender or the
        notifications address. Raises :class:`RoutingError` when no server may send the mail
        and :class:`ValidationFailed` for malformed input.
        """
        if purpose not in PURPOSES:
            raise ValidationFailed("purpose", f"Unknown mail purpose {purpose!r}.")
        if reply_to is not None:
            _reject_injection("reply_to", reply_to)
            reply_to = reply_to.strip() or None
        mail = _Mail(header_from, parse_address(header_from) if header_from.strip() else None)
        dedicated = self.params.mass_mailing_server_id
        if purpose == "mass_mailing" and dedicated is not None:
            if forced_server_id is not None and forced_server_id != dedicated:
                raise RoutingError(
                    f"This mass mailing names server #{forced_server_id}, but mass mailings "
                    f"always go through the {DEDICATED_LABEL} (#{dedicated}): remove the "
                    "mailing's own server or change the Dedicated Server.",
                    forced_server_id=forced_server_id,
                )
            return self._mass_mailing(mail, dedicated, reply_to)
        if forced_server_id is not None:
            return self._forced(mail, forced_server_id, reply_to)
        return self._route(mail, reply_to)

    def recheck(self, decision: Decision) -> Decision:
        """Confirm a stored decision still holds, for a retry through the same server.

        Raises :class:`RoutingError` when the server was deleted, archived, reserved for mass
        mailing since, or no longer accepts the From it was chosen for; the caller then decides
        again (which may pick another server) or reports the error.
        """
        server = self._get(decision.server_id)
        if server is None:
            raise RoutingError(
                f"Server #{decision.server_id} chosen for this mail no longer exists or has an "
                f"invalid {FROM_FILTER_LABEL}: route the mail again.",
                server_id=decision.server_id,
            )
        if not server.info.active:
            raise RoutingError(
                f"Server {server.info.label} chosen for this mail is archived: unarchive it or "
                "route the mail again.",
                server_id=decision.server_id,
            )
        if decision.route not in ("mass_mailing", "forced") and self.is_reserved(server.info):
            raise RoutingError(
                f"Server {server.info.label} chosen for this mail is now reserved for mass "
                f"mailing ({MASS_ONLY_LABEL} or {DEDICATED_LABEL}): route the mail again.",
                server_id=decision.server_id,
            )
        address = parse_address(decision.header_from).address
        if not server.accepts(address):
            raise RoutingError(
                f"Server {server.info.label} no longer accepts {address} in its "
                f"{FROM_FILTER_LABEL}: add it back or route the mail again.",
                server_id=decision.server_id,
            )
        return decision

    # -- rules --------------------------------------------------------------------------------

    def _get(self, server_id: int) -> _Server | None:
        server = self._servers.get(server_id)
        if server is not None:
            self.servers_examined += 1
        return server

    def _look(self, table: Mapping[str, _Server], key: str) -> _Server | None:
        server = table.get(key)
        if server is not None:
            self.servers_examined += 1
        return server

    def _route(self, mail: _Mail, reply_to: str | None) -> Decision:
        """Rules 1-4 over usable servers; rule 5 (fail) when none applies."""
        index, notif = self._usable, self.notifications_address
        if mail.sender is not None:
            address = mail.sender.address
            server = self._look(index.by_address, address)
            if server is not None:
                return self._keep(server, "sender", mail, reply_to)
            server = self._look(index.by_domain, mail.sender.domain)
            if server is not None:
                return self._keep(server, "domain", mail, reply_to)
        if notif is not None:
            server = self._look(index.by_address, notif) or self._look(
                index.by_domain, notif.rpartition("@")[2]
            )
            if server is not None:
                return self._rewrite(server, "notifications", mail, notif, reply_to)
        if index.open:
            server = index.open[0]
            self.servers_examined += 1
            if mail.sender is not None:
                return self._keep(server, "catch_all_server", mail, reply_to)
            if notif is not None:
                return self._rewrite(server, "catch_all_server", mail, notif, reply_to)
        raise self._no_server(mail)

    def _forced(self, mail: _Mail, server_id: int, reply_to: str | None) -> Decision:
        server = self._get(server_id)
        if server is None or not server.info.active:
            state = "is archived" if server is not None else "does not exist"
            reason = self.invalid_filters.get(server_id)
            raise RoutingError(
                f"The server #{server_id} chosen for this mail {state}"
                + (f" ({reason})" if reason else "")
                + ": choose another server on the mail or template, or clear it to route "
                "automatically.",
                forced_server_id=server_id,
            )
        notif = self.notifications_address
        if mail.sender is not None and server.accepts(mail.sender.address):
            return self._keep(server, "forced", mail, reply_to)
        if notif is not None and server.accepts(notif):
            return self._rewrite(server, "forced", mail, notif, reply_to)
        who = mail.sender.address if mail.sender is not None else "a mail with no author"
        raise RoutingError(
            f"The server {server.info.label} chosen for this mail accepts neither {who} nor "
            f"the notifications address {notif or '(not set)'}: add the sender's address or "
            f"domain to its {FROM_FILTER_LABEL}, or choose another server on the mail or "
            "template.",
            forced_server_id=server_id,
        )

    def _mass_mailing(self, mail: _Mail, server_id: int, reply_to: str | None) -> Decision:
        server = self._get(server_id)
        if server is None or not server.info.active:
            state = "is archived" if server is not None else "does not exist"
            reason = self.invalid_filters.get(server_id)
            raise RoutingError(
                f"The {DEDICATED_LABEL} #{server_id} {state}"
                + (f" ({reason})" if reason else "")
                + ": choose another Dedicated Server, or clear it so that mass mailings route "
                "like other mail.",
                server_id=server_id,
            )
        if mail.sender is None:
            raise ValidationFailed("header_from", "A mass mailing needs a From address.")
        # From is never rewritten for mass mailing, so the server must accept the sender as is.
        if not server.accepts(mail.sender.address):
            raise RoutingError(
                f"The {DEDICATED_LABEL} {server.info.label} does not accept "
                f"{mail.sender.address}: empty its {FROM_FILTER_LABEL} or add "
                f"{mail.sender.domain} to it, or send the mailing from an address it accepts.",
                server_id=server_id,
            )
        return self._keep(server, "mass_mailing", mail, reply_to)

    # -- building decisions -------------------------------------------------------------------

    def _envelope(self, server: _Server, from_address: str) -> str:
        """The bounce address when the server accepts it, else the From address itself."""
        bounce = self.bounce_address
        return bounce if bounce is not None and server.accepts(bounce) else from_address

    def _keep(self, server: _Server, route: Route, mail: _Mail, reply_to: str | None) -> Decision:
        sender = mail.sender
        assert sender is not None  # callers only keep a From that exists
        header = format_mailbox(sender.display_name, sender.written_address)
        return Decision(
            server.info.id, route, header, self._envelope(server, sender.address), reply_to
        )

    def _rewrite(
        self, server: _Server, route: Route, mail: _Mail, notif: str, reply_to: str | None
    ) -> Decision:
        sender = mail.sender
        name = (sender.display_name or sender.local_part) if sender is not None else ""
        header = format_mailbox(name, notif)
        if reply_to is None:
            # Replies must not land in the notifications mailbox: catchall routes them back into
            # the ERP; without one, the author's own address still reaches a human.
            reply_to = self.catchall_address or (sender.written_address if sender else None)
        return Decision(server.info.id, route, header, self._envelope(server, notif), reply_to)

    # -- errors -------------------------------------------------------------------------------

    def _no_server(self, mail: _Mail) -> RoutingError:
        notif = self.notifications_address
        sender = mail.sender
        if notif is None:
            notif_text = (
                "there is no notifications address (set mail.catchall.domain, and "
                "mail.default.from if 'notifications' is not the local part you want)"
            )
        else:
            notif_text = f"the notifications address {notif} is not accepted by any server either"
        if sender is not None:
            message = (
                f"No outgoing server accepts {sender.address}, and {notif_text}: add "
                f"{sender.domain} or {sender.address} to a server's {FROM_FILTER_LABEL}, or set "
                "mail.default.from / mail.catchall.domain so that a server accepts the "
                "notifications address."
            )
        elif notif is None:
            message = (
                "This mail has no author and there is no notifications address: set "
                "mail.catchall.domain (and mail.default.from) and add the resulting address to "
                f"a server's {FROM_FILTER_LABEL}."
            )
        else:
            message = (
                f"This mail has no author and no outgoing server accepts the notifications "
                f"address {notif}: add {notif} or {notif.rpartition('@')[2]} to a server's "
                f"{FROM_FILTER_LABEL}, or change mail.default.from / mail.catchall.domain."
            )
        hints = self._hints([a for a in (sender.address if sender else None, notif) if a])
        return RoutingError(" ".join([message, *hints]), header_from=mail.original)

    def _why_unusable(self, info: ServerInfo) -> str:
        if not info.active:
            return "is archived (unarchive it)"
        if info.id == self.params.mass_mailing_server_id:
            return f"is the {DEDICATED_LABEL} (choose another one there)"
        return f"is marked {MASS_ONLY_LABEL} (clear that box on the server)"

    def _hints(self, addresses: list[str]) -> list[str]:
        """Explain servers that would have matched but may not be used (a constant-cost look)."""
        hints: list[str] = []
        for index in (self._reserved, self._archived):
            seen: set[int] = set()
            for address in addresses:
                server = (
                    self._look(index.by_address, address)
                    or self._look(index.by_domain, address.rpartition("@")[2])
                    or (index.open[0] if index.open else None)
                )
                if server is not None and server.info.id not in seen:
                    seen.add(server.info.id)
                    hints.append(
                        f"Server {server.info.label} would accept {address} but "
                        f"{self._why_unusable(server.info)}."
                    )
        if self.invalid_filters:
            shown = list(self.invalid_filters.values())[:3]
            more = len(self.invalid_filters) - len(shown)
            hints.append(
                f"Skipped for an invalid {FROM_FILTER_LABEL}: "
                + "; ".join(shown)
                + (f"; and {more} more." if more else ".")
            )
        return hints
