"""PIPELINING (RFC 2920) and the commit hook of ``SmtpConnection.send``, on a scripted server.

The server answers nothing until the whole envelope (MAIL, RCPT, DATA) has arrived, so every
test that gets a message through proves the client pipelined it. With ``hold_dot`` it also
notes whether the next envelope came right behind a final dot (``send(then=...)``).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from konvergo.transports.smtp import SmtpFailure, Submission
from tests.transports.smtp_servers import PipeliningServer, connection_to, dead_port

SENDER = "alice@konvergo.test"
TO = ["bob@example.test", "carol@example.test"]
MESSAGE = b"From: alice@konvergo.test\r\nSubject: Hello\r\n\r\nHello Bob\r\n"

Start = Callable[..., PipeliningServer]


@pytest.fixture
def start(start_scripted: Start) -> Start:
    return start_scripted


def test_sends_the_whole_envelope_before_reading_any_reply(
    start: Start,
) -> None:
    """MAIL, every RCPT and DATA go out together, and the message arrives once."""
    server = start()
    with connection_to(server.port) as connection:
        result = connection.send(SENDER, TO, MESSAGE)
    assert result.accepted == TO
    assert [c.split(":")[0] for c in server.commands[1:5]] == [
        "MAIL FROM",
        "RCPT TO",
        "RCPT TO",
        "DATA",
    ]
    assert server.commands[1] == f"MAIL FROM:<{SENDER}> SIZE={len(MESSAGE)}"
    assert server.bodies == [MESSAGE + b".\r\n"]


def test_runs_before_commit_while_the_envelope_travels_and_before_the_final_dot(
    start: Start,
) -> None:
    """The hook runs once the envelope is on the wire and before any of the message is sent."""
    server = start()
    seen: list[tuple[bool, int]] = []

    def before_commit() -> None:
        seen.append((server.envelope_arrived.wait(3), len(server.bodies)))

    with connection_to(server.port) as connection:
        connection.send(SENDER, TO, MESSAGE, before_commit=before_commit)
    assert seen == [(True, 0)]
    assert len(server.bodies) == 1


@pytest.mark.parametrize("chunking", [False, True], ids=["data", "bdat"])
def test_a_failing_before_commit_leaves_the_message_unsent(start: Start, chunking: bool) -> None:
    """When the hook raises, the message is never completed (no final dot, no last byte of the
    chunk) and the connection is dropped."""
    server = start(chunking=chunking)

    def before_commit() -> None:
        raise RuntimeError("the database is gone")

    connection = connection_to(server.port)
    with pytest.raises(RuntimeError, match="database is gone"):
        connection.send(SENDER, TO, MESSAGE, before_commit=before_commit)
    assert not connection.is_open
    assert server.bodies == []


def test_runs_before_commit_even_when_the_server_cannot_be_reached() -> None:
    """The previous message's outcome is still recorded when the next one cannot start."""
    ran: list[bool] = []
    with pytest.raises(SmtpFailure):
        connection_to(dead_port()).send(SENDER, TO, MESSAGE, before_commit=lambda: ran.append(True))
    assert ran == [True]


def test_reports_a_refused_sender_after_reading_every_pipelined_reply(
    start: Start,
) -> None:
    """A MAIL FROM refusal is the error, not the 503s that follow it, and nothing is sent."""
    server = start(
        {
            "MAIL": "530 5.7.57 Client not authenticated to send mail",
            "RCPT": "503 5.5.1 Bad sequence of commands",
            "DATA": "503 5.5.1 Bad sequence of commands",
        }
    )
    connection = connection_to(server.port)
    with pytest.raises(SmtpFailure) as caught:
        connection.send(SENDER, TO, MESSAGE)
    assert (caught.value.stage, caught.value.reply_code) == ("mail", 530)
    assert "5.7.57" in caught.value.reply_text
    assert server.bodies == []
    assert connection.is_open  # every reply was read: the session can go on
    connection.close()


def test_ends_a_data_accepted_after_every_recipient_was_refused_with_an_empty_message(
    start: Start,
) -> None:
    """If DATA gets 354 although no recipient was accepted, only a lone dot follows."""
    server = start({"RCPT": "550 5.1.10 RESOLVER.ADR.RecipientNotFound"})
    connection = connection_to(server.port)
    with pytest.raises(SmtpFailure) as caught:
        connection.send(SENDER, TO, MESSAGE)
    assert caught.value.stage == "rcpt"
    assert set(caught.value.refused) == set(TO)
    assert server.bodies == [b".\r\n"]
    connection.close()


def test_refuses_an_address_that_would_smuggle_a_command(
    start: Start,
) -> None:
    """A line break in an address fails that message permanently and reaches no server."""
    server = start()
    with connection_to(server.port) as connection, pytest.raises(SmtpFailure) as caught:
        connection.send("a@b.test>\r\nRCPT TO:<x@y.test", TO, MESSAGE)
    assert caught.value.failure_class == "permanent" and caught.value.stage == "mail"
    assert not any("x@y.test" in command for command in server.commands)


def test_sends_a_quoted_local_part_with_a_space(start: Start) -> None:
    """``"john doe"@example.com`` is a valid address and goes out exactly as written."""
    server = start()
    with connection_to(server.port) as connection:
        connection.send('"john doe"@example.test', ['"mary ann"@example.test'], MESSAGE)
    assert server.commands[1].startswith('MAIL FROM:<"john doe"@example.test>')
    assert server.commands[2] == 'RCPT TO:<"mary ann"@example.test>'
    assert len(server.bodies) == 1


SECOND = b"From: alice@konvergo.test\r\nSubject: Again\r\n\r\nHello again\r\n"
THIRD = b"From: alice@konvergo.test\r\nSubject: Other\r\n\r\nSomething else\r\n"


def test_sends_the_next_envelope_right_behind_the_final_dot(
    start: Start,
) -> None:
    """With ``then`` the next MAIL, RCPT and DATA travel with the final dot, on one connection."""
    server = start(hold_dot=2.0)
    with connection_to(server.port) as connection:
        first = connection.send(SENDER, TO, MESSAGE, then=Submission(SENDER, TO[:1], SECOND))
        second = connection.send(SENDER, TO[:1], SECOND)
    assert (first.accepted, second.accepted) == (TO, TO[:1])
    assert server.dot_followed == [True, False]
    assert server.bodies == [MESSAGE + b".\r\n", SECOND + b".\r\n"]
    assert server.commands[5] == f"MAIL FROM:<{SENDER}> SIZE={len(SECOND)}"
    assert server.connections == 1


def test_records_the_previous_outcome_before_the_announced_message_is_completed(
    start: Start,
) -> None:
    """``before_commit`` still runs before the final dot when the envelope went out early."""
    server = start(hold_dot=2.0)
    seen: list[int] = []
    with connection_to(server.port) as connection:
        connection.send(SENDER, TO, MESSAGE, then=Submission(SENDER, TO, SECOND))
        connection.send(SENDER, TO, SECOND, before_commit=lambda: seen.append(len(server.bodies)))
    assert seen == [1]
    assert len(server.bodies) == 2


def test_the_announced_message_travels_while_the_previous_outcome_is_recorded(
    start: Start,
) -> None:
    """After an early envelope, the content goes out before ``before_commit`` and the final
    dot after it: the server reads the message while the database works."""
    server = start()
    seen: list[tuple[bool, int]] = []

    def before_commit() -> None:
        seen.append((server.content_arriving.wait(3), len(server.bodies)))

    with connection_to(server.port) as connection:
        connection.send(SENDER, TO, MESSAGE, then=Submission(SENDER, TO, SECOND))
        connection.send(SENDER, TO, SECOND, before_commit=before_commit)
    assert seen == [(True, 1)]
    assert server.bodies == [MESSAGE + b".\r\n", SECOND + b".\r\n"]


def test_a_refused_message_leaves_the_announced_one_to_be_sent(
    start: Start,
) -> None:
    """A refusal at the end of DATA fails that message only; the next goes out on the session."""
    server = start(data_reply=["554 5.2.0 STOREDRV.Submission.Exception", "250 2.0.0 OK"])
    connection = connection_to(server.port)
    with pytest.raises(SmtpFailure) as caught:
        connection.send(SENDER, TO, MESSAGE, then=Submission(SENDER, TO, SECOND))
    assert (caught.value.stage, caught.value.reply_code) == ("data", 554)
    assert connection.send(SENDER, TO, SECOND).reply.code == 250
    assert server.connections == 1
    connection.close()


def test_sending_another_message_than_announced_starts_afresh_and_sends_nothing_empty(
    start: Start,
) -> None:
    """The announced transaction is abandoned by hanging up: no empty message is delivered."""
    server = start()
    with connection_to(server.port) as connection:
        connection.send(SENDER, TO, MESSAGE, then=Submission(SENDER, TO, SECOND))
        connection.send(SENDER, TO, THIRD)
    assert server.bodies == [MESSAGE + b".\r\n", THIRD + b".\r\n"]
    assert server.connections == 2


def test_closing_after_an_announced_envelope_hangs_up_without_quit(
    start: Start,
) -> None:
    """QUIT would become message content after a 354: close() hangs up instead."""
    server = start()
    connection = connection_to(server.port)
    connection.send(SENDER, TO, MESSAGE, then=Submission(SENDER, TO, SECOND))
    connection.close()
    server.stop()
    assert "QUIT" not in [command.upper() for command in server.commands]
    assert server.bodies == [MESSAGE + b".\r\n"]


def test_a_next_message_that_cannot_be_announced_fails_on_its_own(
    start: Start,
) -> None:
    """A bad address in ``then`` does not fail the current message; its own send reports it."""
    server = start(hold_dot=0.3)
    bad = "a@b.test>\r\nRCPT TO:<x@y.test"
    with connection_to(server.port) as connection:
        connection.send(SENDER, TO, MESSAGE, then=Submission(bad, TO, SECOND))
        with pytest.raises(SmtpFailure) as caught:
            connection.send(bad, TO, SECOND)
    assert caught.value.failure_class == "permanent"
    assert server.dot_followed == [False]
    assert not any("x@y.test" in command for command in server.commands)
