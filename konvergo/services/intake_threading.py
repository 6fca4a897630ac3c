"""Which thread an incoming message belongs to, decided for a whole batch at once.

The cascade (django.md §7 lesson 7, Odoo's ``message_route`` without its bounces):

1. In-Reply-To, then References newest first, against the Message-IDs we know: our own
   outgoing messages and every message received earlier (or earlier in the same batch).
2. The address it was sent to: ``<catchall>+<thread id>@<domain>`` names a thread; an alias
   configured as the System Parameter ``mail.alias.<kind>`` (e.g. ``mail.alias.ticket =
   support``) opens a thread of that kind.
3. Otherwise a new thread of the server's "Create a New Record" kind.

One query resolves the Message-IDs of a batch, one the thread ids of sub-addresses, so the
cost per message does not grow with the size of the database beyond an index lookup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from konvergo.mailparse import ParsedMessage, thread_keys
from konvergo.services import parameters
from konvergo.store.dbvalues import select_in
from konvergo.store.models import Message, Thread

#: Thread kinds an alias may open (IncomingServer.Target values).
ALIAS_KINDS = ("inbox", "lead", "ticket")


@dataclass(frozen=True)
class Route:
    """Where a message goes: an existing thread, or a new thread of ``kind``."""

    thread_id: int | None
    kind: str
    reason: str


@dataclass(frozen=True)
class AddressBook:
    """The addresses that route by themselves, read once per batch from System Parameters."""

    catchall_local: str
    domain: str
    aliases: dict[str, str]  # full address -> kind

    @classmethod
    def load(cls) -> AddressBook:
        alias_keys = [f"mail.alias.{kind}" for kind in ALIAS_KINDS]
        values = parameters.get_many("mail.catchall.domain", "mail.catchall.alias", *alias_keys)
        domain = values["mail.catchall.domain"].lower()
        catchall = parameters.join_alias(values["mail.catchall.alias"], domain)
        aliases: dict[str, str] = {}
        for kind in ALIAS_KINDS:
            value = values[f"mail.alias.{kind}"].strip().lower()
            if not value:
                continue
            address = value if "@" in value else (f"{value}@{domain}" if domain else "")
            if address:
                aliases[address] = kind
        return cls(catchall.partition("@")[0], domain, aliases)

    def sub_address_thread(self, address: str) -> int | None:
        """The thread id in ``catchall+<id>@domain``, or None."""
        if not self.catchall_local or not self.domain:
            return None
        found = re.fullmatch(
            re.escape(self.catchall_local) + r"\+(\d{1,18})@" + re.escape(self.domain), address
        )
        return int(found.group(1)) if found else None


def known_threads(message_ids: Iterable[str]) -> dict[str, int]:
    """Thread id per known Message-ID (the newest message wins when an id repeats)."""
    found: dict[str, tuple[int, int]] = {}
    rows = select_in(Message, ["message_id", "thread", "id"], "message_id", message_ids)
    for msg_id, thread_id, pk in rows:
        if msg_id not in found or found[msg_id][1] < pk:
            found[msg_id] = (thread_id, pk)
    return {k: v[0] for k, v in found.items()}


def route_batch(parsed: Sequence[ParsedMessage], default_kind: str) -> list[Route]:
    """A route per message of ``parsed`` (in order); replies within the batch are marked with
    ``thread_id=None, reason="batch:<index>"`` and resolved by the caller after creating the
    earlier message's thread."""
    keys = [thread_keys(p) for p in parsed]
    by_id = known_threads(k for ks in keys for k in ks)
    book: AddressBook | None = None
    earlier: dict[str, int] = {}
    routes: list[Route] = []
    sub_ids: dict[int, int] = {}
    for index, (p, ks) in enumerate(zip(parsed, keys, strict=True)):
        route: Route | None = None
        for key in ks:
            if key in earlier:
                route = Route(None, default_kind, f"batch:{earlier[key]}")
                break
            if key in by_id:
                route = Route(by_id[key], default_kind, f"reply to {key}")
                break
        if route is None:
            book = book or AddressBook.load()
            route = _route_by_address(p, book, default_kind, sub_ids)
        routes.append(route)
        earlier.setdefault(p.message_id, index)
    return _check_sub_addresses(routes, sub_ids, default_kind)


def _route_by_address(
    p: ParsedMessage, book: AddressBook, default_kind: str, sub_ids: dict[int, int]
) -> Route:
    for address in p.recipients:
        thread_id = book.sub_address_thread(address)
        if thread_id is not None:
            sub_ids[thread_id] = thread_id
            return Route(thread_id, default_kind, f"sent to {address}")
        kind = book.aliases.get(address)
        if kind is not None:
            return Route(None, kind, f"alias {address}")
    return Route(None, default_kind, "new")


def _check_sub_addresses(
    routes: list[Route], sub_ids: dict[int, int], default_kind: str
) -> list[Route]:
    # A sub-address may name a thread that does not exist (typo, deleted): open a new one.
    if not sub_ids:
        return routes
    existing = set(Thread.objects.filter(pk__in=list(sub_ids)).values_list("pk", flat=True))
    return [
        Route(None, default_kind, "new")
        if r.reason.startswith("sent to") and r.thread_id not in existing
        else r
        for r in routes
    ]
