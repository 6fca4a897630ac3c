"""Token-endpoint and callback errors are parsed into fields, a catalogue entry and a class."""

from __future__ import annotations

import json
import pickle

from konvergo.errors import AuthorizationError
from konvergo.providers.microsoft.errors import (
    AuthorizeError,
    TokenEndpointError,
    parse_authorize_error,
    parse_token_error,
)

# research/microsoft.md §1.5, verbatim (Azure/azure-cli#14244).
MICROSOFT_EXAMPLE = """{
  "error": "invalid_grant",
  "error_description": "AADSTS700082: The refresh token has expired due to inactivity. The token was issued on 2020-02-26T21:52:54.2810613Z and was inactive for 90.00:00:00.\\r\\nTrace ID: 6e94ade5-10de-4d67-909a-14d845813500\\r\\nCorrelation ID: 0e87b495-1e24-4882-be85-d012c216f4f6\\r\\nTimestamp: 2020-07-06 22:31:52Z",
  "error_codes": [700082],
  "timestamp": "2020-07-06 22:31:52Z",
  "trace_id": "6e94ade5-10de-4d67-909a-14d845813500",
  "correlation_id": "0e87b495-1e24-4882-be85-d012c216f4f6",
  "error_uri": "https://login.microsoftonline.com/error?code=700082"
}"""  # noqa: E501

TRACE = "6e94ade5-10de-4d67-909a-14d845813500"
CORRELATION = "0e87b495-1e24-4882-be85-d012c216f4f6"


def test_microsoft_example_json_is_parsed_field_by_field() -> None:
    """The §1.5 example yields every field, AADSTS700082, entry E-17 and "authorization"."""
    err = parse_token_error(400, MICROSOFT_EXAMPLE.encode())

    assert isinstance(err, TokenEndpointError)
    assert isinstance(err, AuthorizationError)
    assert err.error == "invalid_grant"
    assert err.error_codes == [700082]
    assert err.aadsts == 700082
    assert err.trace_id == TRACE
    assert err.correlation_id == CORRELATION
    assert err.timestamp == "2020-07-06 22:31:52Z"
    assert err.error_uri == "https://login.microsoftonline.com/error?code=700082"
    assert err.status == 400
    assert err.explanation is not None and err.explanation.entry.id == "E-17"
    assert err.failure_class == "authorization"
    assert err.error_description.startswith("AADSTS700082: The refresh token has expired")
    assert "\r\nTrace ID: " in err.error_description


def test_one_line_description_yields_the_identifiers_from_its_suffix() -> None:
    """Logs print the suffix on one line without trace_id fields; the ids still come out."""
    body = {
        "error": "invalid_grant",
        "error_description": (
            "AADSTS700082: The refresh token has expired due to inactivity. The token was "
            "issued on 2020-02-26T21:52:54.2810613Z and was inactive for 90.00:00:00. "
            f"Trace ID: {TRACE} Correlation ID: {CORRELATION} Timestamp: 2020-07-06 22:31:52Z"
        ),
    }

    err = parse_token_error(400, json.dumps(body))

    assert err.aadsts == 700082
    assert err.trace_id == TRACE
    assert err.correlation_id == CORRELATION
    assert err.timestamp == "2020-07-06 22:31:52Z"
    assert err.explanation is not None
    assert err.explanation.message.endswith("inactive for 90.00:00:00.")


def test_several_error_codes_keep_all_and_explain_the_specific_one() -> None:
    """``[70002, 54005]`` keeps both codes; the description's AADSTS54005 selects E-16."""
    body = {
        "error": "invalid_grant",
        "error_description": (
            "AADSTS54005: OAuth2 Authorization code was already redeemed, please retry with a "
            "new valid code or use an existing refresh token."
        ),
        "error_codes": [70002, 54005],
    }

    err = parse_token_error(400, body)

    assert err.error_codes == [70002, 54005]
    assert err.aadsts == 54005
    assert err.explanation is not None and err.explanation.entry.id == "E-16"
    assert err.failure_class == "authorization"


def test_error_codes_explain_when_the_description_has_no_code() -> None:
    """Without an AADSTS prefix the catalogue is searched through every error code."""
    err = parse_token_error(400, {"error": "invalid_grant", "error_codes": [70002, 54005]})

    assert err.aadsts == 70002
    assert err.explanation is not None and err.explanation.entry.id == "E-16"


def test_non_json_body_keeps_the_raw_text_and_the_status() -> None:
    """An HTML 503 from a proxy is a temporary failure with the raw text kept for support."""
    err = parse_token_error(503, b"<html><body>Service Unavailable</body></html>")

    assert err.error == ""
    assert err.status == 503
    assert err.raw == "<html><body>Service Unavailable</body></html>"
    assert err.explanation is None
    assert err.failure_class == "temporary"
    assert "HTTP 503" in str(err)


def test_non_json_client_error_holds_mail_rather_than_retrying() -> None:
    """An unreadable 400 is not retried blindly: it is treated as an authorization problem."""
    err = parse_token_error(400, "Bad Request")

    assert err.failure_class == "authorization"


def test_http_401_invalid_client_is_a_configuration_failure() -> None:
    """AADSTS7000215 with HTTP 401 points the app registration admin to the secret's Value."""
    body = {
        "error": "invalid_client",
        "error_description": (
            "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
            "request is the client secret value, not the client secret ID, for a secret added "
            f"to app '<appid>'.\r\nTrace ID: {TRACE}\r\nCorrelation ID: {CORRELATION}\r\n"
            "Timestamp: 2024-05-02 10:11:12Z"
        ),
        "error_codes": [7000215],
        "timestamp": "2024-05-02 10:11:12Z",
        "trace_id": TRACE,
        "correlation_id": CORRELATION,
        "error_uri": "https://login.microsoftonline.com/error?code=7000215",
    }

    err = parse_token_error(401, json.dumps(body).encode())

    assert err.status == 401
    assert err.error == "invalid_client"
    assert err.aadsts == 7000215
    assert err.explanation is not None and err.explanation.entry.id == "E-04"
    assert err.explanation.entry.who_must_act == "app registration admin"
    assert err.failure_class == "configuration"


def test_expired_secret_is_a_configuration_failure() -> None:
    """AADSTS7000222 (expired secret) asks an admin for a new secret, not a reconnect."""
    err = parse_token_error(
        401,
        {
            "error": "invalid_client",
            "error_description": "AADSTS7000222: The provided client secret keys for app "
            "'<appid>' are expired.",
            "error_codes": [7000222],
        },
    )

    assert err.failure_class == "configuration"


def test_consent_required_suberror_is_kept() -> None:
    """AADSTS65001 keeps ``suberror`` and holds mail until someone reconnects."""
    err = parse_token_error(
        400,
        {
            "error": "invalid_grant",
            "error_description": "AADSTS65001: The user or administrator has not consented to "
            "use the application with ID '<appid>' named '<name>'.",
            "error_codes": [65001],
            "suberror": "consent_required",
        },
    )

    assert err.suberror == "consent_required"
    assert err.failure_class == "authorization"


def test_unknown_invalid_grant_code_still_holds_mail() -> None:
    """A code the catalogue does not know falls back to the class of ``error``."""
    err = parse_token_error(
        400, {"error": "invalid_grant", "error_description": "AADSTS99999: new text"}
    )

    assert err.explanation is None
    assert err.failure_class == "authorization"


def test_throttling_is_temporary_and_keeps_retry_after() -> None:
    """HTTP 429 is retried; Retry-After seconds are passed on to the backoff."""
    err = parse_token_error(429, "", headers={"Retry-After": "7"})

    assert err.failure_class == "temporary"
    assert err.retry_after == 7.0


def test_temporarily_unavailable_is_temporary_even_with_http_400() -> None:
    """``temporarily_unavailable`` means Microsoft is busy: retry, do not reconnect."""
    err = parse_token_error(
        400, {"error": "temporarily_unavailable", "error_description": "AADSTS50196: loop"}
    )

    assert err.failure_class == "temporary"


def test_as_dict_is_json_serialisable_with_the_explanation() -> None:
    """The parsed error goes into the grant's last-error record as JSON."""
    err = parse_token_error(400, MICROSOFT_EXAMPLE)

    data = json.loads(json.dumps(err.as_dict()))

    assert data["aadsts"] == 700082
    assert data["failure_class"] == "authorization"
    assert data["explanation"]["id"] == "E-17"


def test_callback_error_is_explained_with_its_identifiers() -> None:
    """``?error=access_denied`` with AADSTS65004 on the confirm page explains E-13."""
    params = {
        "error": "access_denied",
        "error_description": (
            "AADSTS65004: User declined to consent to access the app.\r\n"
            f"Trace ID: {TRACE}\r\nCorrelation ID: {CORRELATION}\r\n"
            "Timestamp: 2023-08-28 11:25:19Z"
        ),
        "error_uri": "https://login.microsoftonline.com/error?code=65004",
        "state": "abc",
    }

    err = parse_authorize_error(params)

    assert isinstance(err, AuthorizeError)
    assert err.error_codes == [65004]
    assert err.trace_id == TRACE
    assert err.timestamp == "2023-08-28 11:25:19Z"
    assert err.explanation is not None and err.explanation.entry.id == "E-13"
    assert err.explanation.surface == "authorize"
    assert err.failure_class == "authorization"


def test_parsed_error_survives_pickling_between_processes() -> None:
    """Workers hand errors to their parent process; fields and class must survive."""
    err = parse_token_error(401, {"error": "invalid_client", "error_codes": [7000215]})

    copy = pickle.loads(pickle.dumps(err))

    assert type(copy) is TokenEndpointError
    assert copy.as_dict() == err.as_dict()
