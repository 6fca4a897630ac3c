"""CHUNKING (RFC 3030) with PIPELINING, as smtp.office365.com offers both, on a scripted server.

The server answers nothing until a ``BDAT`` chunk has arrived whole, so every message that
gets through proves the client sent envelope and message in one group.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest

from konvergo.transports.smtp import SmtpFailure, Submission
from konvergo.transports.smtp_errors import SmtpPermanentError, SmtpTemporaryError
from tests.transports.smtp_servers import PipeliningServer, connection_to

SENDER = "alice@konvergo.test"
TO = ["bob@example.test", "carol@example.test"]
# A line that starts with a dot, and one that is only a dot: DATA would have to double them.
MESSAGE = b"From: alice@konvergo.test\r\nSubject: Dots\r\n\r\n.hidden\r\n.\r\nend\r\n"

Start = Callable[..., PipeliningServer]


@pytest.fixture
def start(start_scripted: Start) -> Start:
    """Scripted servers that offer CHUNKING unless told otherwise."""
    return functools.partial(start_scripted, chunking=True)


def test_sends_envelope_and_message_as_one_chunk_exactly_as_written(
    start: Start,
) -> None:
    """MAIL, each RCPT and BDAT go with the message's bytes at once, with no dot doubled."""
    server = start()
    with connection_to(server.port) as connection:
        result = connection.send(SENDER, TO, MESSAGE)
    assert result.accepted == TO and result.reply.code == 250
    assert server.commands[1:5] == [
        f"MAIL FROM:<{SENDER}> SIZE={len(MESSAGE)}",
        f"RCPT TO:<{TO[0]}>",
        f"RCPT TO:<{TO[1]}>",
        f"BDAT {len(MESSAGE)} LAST",
    ]
    assert server.bodies == [MESSAGE]
    assert "DATA" not in server.commands


def test_records_the_previous_outcome_before_the_last_byte_of_the_message(
    start: Start,
) -> None:
    """The hook runs once the chunk is on its way, and before the server has it whole."""
    server = start()
    seen: list[tuple[bool, int]] = []

    def before_commit() -> None:
        seen.append((server.content_arriving.wait(3), len(server.bodies)))

    with connection_to(server.port) as connection:
        connection.send(SENDER, TO, MESSAGE, before_commit=before_commit)
    assert seen == [(True, 0)]
    assert server.bodies == [MESSAGE]


def test_a_refused_message_is_reset_before_the_next_one(
    start: Start,
) -> None:
    """After a refused chunk the transaction is undefined (RFC 3030): RSET, then the next."""
    server = start(data_reply=["550 5.7.60 SMTP; Client does not have permissions", "250 OK"])
    with connection_to(server.port) as connection:
        with pytest.raises(SmtpFailure) as caught:
            connection.send(SENDER, TO, MESSAGE, then=Submission(SENDER, TO, MESSAGE))
        assert caught.value.stage == "data" and "5.7.60" in str(caught.value)
        connection.send(SENDER, TO, MESSAGE)
    verbs = [c.split(" ")[0].split(":")[0].upper() for c in server.commands[1:]]
    assert verbs == ["MAIL", "RCPT", "RCPT", "BDAT", "RSET", "MAIL", "RCPT", "RCPT", "BDAT", "QUIT"]
    assert len(server.bodies) == 2


def test_a_refused_sender_is_reported_as_such_not_as_the_refused_chunk(
    start: Start,
) -> None:
    """The reply to MAIL decides, though every reply of the group was read in order."""
    server = start(
        replies={"MAIL": "550 5.7.1 Sender not allowed"}, data_reply="503 5.5.1 Need MAIL"
    )
    with connection_to(server.port) as connection, pytest.raises(SmtpFailure) as caught:
        connection.send(SENDER, TO, MESSAGE)
    assert caught.value.stage == "mail" and "5.7.1" in str(caught.value)


def test_a_server_without_chunking_gets_data_with_dots_doubled(
    start: Start,
) -> None:
    """Without CHUNKING in EHLO the message goes by DATA, transparent as RFC 5321 requires."""
    server = start(chunking=False)
    with connection_to(server.port) as connection:
        connection.send(SENDER, TO, MESSAGE)
    assert "DATA" in server.commands
    assert server.bodies == [MESSAGE.replace(b"\r\n.", b"\r\n..") + b".\r\n"]


def test_a_connection_lost_after_the_message_went_out_is_never_retried_within_the_call(
    start: Start,
) -> None:
    """The server may have the message (it holds replies until the group is read): one copy."""
    server = start(drop_after_chunk=True)
    connection = connection_to(server.port)
    with pytest.raises(SmtpTemporaryError) as caught:
        connection.send(SENDER, TO, MESSAGE)
    assert caught.value.stage == "data"
    assert len(server.bodies) == 1 and server.connections == 1


def test_a_message_over_the_announced_size_is_refused_before_it_is_uploaded(
    start: Start,
) -> None:
    """SIZE in EHLO is checked first: a message the server would refuse is not sent at all."""
    server = start()
    big = MESSAGE + b"x" * 1_000_000 + b"\r\n"
    with connection_to(server.port) as connection, pytest.raises(SmtpPermanentError) as caught:
        connection.send(SENDER, TO, big)
    assert caught.value.stage == "mail" and "1000000 bytes" in str(caught.value)
    assert server.bodies == [] and not any(c.startswith("MAIL") for c in server.commands)


def test_a_message_without_a_final_line_break_gets_one_as_with_data(
    start: Start,
) -> None:
    """Both ways deliver the same bytes: a message is completed with CRLF when it lacks one."""
    server = start()
    with connection_to(server.port) as connection:
        connection.send(SENDER, TO, MESSAGE + b"no line break")
    assert server.bodies == [MESSAGE + b"no line break\r\n"]
    assert server.commands[4] == f"BDAT {len(MESSAGE) + 15} LAST"
