"""How SMTP failures are classified, described and carried between processes."""

from __future__ import annotations

import pickle
import smtplib
import socket
import ssl

import pytest

from konvergo.errors import (
    AuthorizationError,
    ConfigurationError,
    PermanentTransportError,
    TemporaryTransportError,
)
from konvergo.transports.smtp_errors import (
    SmtpFailure,
    Stage,
    class_for_reply,
    exception_failure,
    reply_failure,
)
from tests.transports.smtp_servers import EXCHANGE_SEND_AS_DENIED, EXCHANGE_SMTP_AUTH_DISABLED


@pytest.mark.parametrize(
    ("code", "stage", "expected"),
    [
        (421, "connect", TemporaryTransportError),
        (432, "mail", TemporaryTransportError),
        (451, "data", TemporaryTransportError),
        (454, "auth", TemporaryTransportError),
        (535, "auth", AuthorizationError),
        (530, "mail", AuthorizationError),
        (534, "auth", AuthorizationError),
        (550, "auth", AuthorizationError),
        (538, "auth", ConfigurationError),
        (550, "rcpt", PermanentTransportError),
        (554, "data", PermanentTransportError),
        (552, "mail", PermanentTransportError),
        (250, "data", PermanentTransportError),
    ],
)
def test_reply_codes_map_to_the_project_exceptions(
    code: int, stage: Stage, expected: type[Exception]
) -> None:
    """Each reply code, at each stage, raises the class the table promises."""
    assert issubclass(class_for_reply(code, stage), expected)


def test_a_reply_failure_quotes_the_stage_and_the_exact_reply() -> None:
    """The message names the stage and repeats the server's reply unaltered."""
    text = EXCHANGE_SEND_AS_DENIED.removeprefix("554 ")
    failure = reply_failure(554, text, "data", server="smtp.office365.com:587")
    assert (failure.stage, failure.reply_code, failure.reply_text) == ("data", 554, text)
    assert str(failure).startswith("DATA (message) failed on smtp.office365.com:587")
    assert str(failure).endswith(EXCHANGE_SEND_AS_DENIED)


def test_the_catalogue_explains_a_microsoft_reply_and_refines_the_failure_class() -> None:
    """535 5.7.139 is an AuthorizationError whose catalogue advice says an admin must act."""
    failure = reply_failure(
        535, EXCHANGE_SMTP_AUTH_DISABLED.removeprefix("535 "), "auth", server="x:587"
    )
    assert isinstance(failure, AuthorizationError)
    assert failure.explanation is not None and failure.explanation.entry.ref == "E-20"
    assert failure.failure_class == "configuration"


def test_an_unknown_reply_falls_back_to_the_class_of_its_code() -> None:
    """Without catalogue advice, the failure class follows the exception class."""
    failure = reply_failure(451, "4.3.0 Try again later", "data", server="x:25")
    assert failure.explanation is None
    assert failure.failure_class == "temporary"


@pytest.mark.parametrize(
    ("exc", "expected", "advice"),
    [
        (
            ConnectionRefusedError(111, "Connection refused"),
            TemporaryTransportError,
            "host and port",
        ),
        (TimeoutError("timed out"), TemporaryTransportError, "SSL/TLS"),
        (
            smtplib.SMTPServerDisconnected("Connection unexpectedly closed"),
            TemporaryTransportError,
            "Connection Encryption",
        ),
        (
            ssl.SSLCertVerificationError("certificate verify failed"),
            ConfigurationError,
            "KONVERGO_CA_BUNDLE",
        ),
        (ssl.SSLError("wrong version number"), ConfigurationError, "Connection Encryption"),
        (
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            ConfigurationError,
            "Check the host",
        ),
        (
            socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
            TemporaryTransportError,
            "Check the host",
        ),
    ],
    ids=["refused", "timeout", "disconnected", "untrusted", "tls", "unknown-host", "dns-down"],
)
def test_network_errors_map_to_a_class_and_say_what_to_check(
    exc: BaseException, expected: type[Exception], advice: str
) -> None:
    """Each low-level error gets the right class and a message naming what to check."""
    failure = exception_failure(
        exc, "connect", host="mail.example.test", port=587, encryption="starttls"
    )
    assert isinstance(failure, expected)
    assert advice in str(failure)
    assert failure.reply_code is None


def test_failures_survive_pickling_for_worker_processes() -> None:
    """A failure keeps its class, stage, reply and refused recipients through pickle."""
    failure = reply_failure(
        550,
        "5.1.1 User unknown",
        "rcpt",
        server="x:587",
        refused={"a@b.test": (550, "5.1.1 User unknown")},
    )
    copy = pickle.loads(pickle.dumps(failure))
    assert type(copy) is type(failure)
    assert (copy.stage, copy.reply_code, copy.reply_text, copy.refused, str(copy)) == (
        failure.stage,
        failure.reply_code,
        failure.reply_text,
        failure.refused,
        str(failure),
    )
    assert isinstance(copy, SmtpFailure)
