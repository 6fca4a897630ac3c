"""The seam between outgoing servers and the credentials their SMTP sessions present.

A password server gets a :class:`PasswordAuth`; an "Outlook" server gets an
:class:`XOAuth2Auth` whose token provider asks the OAuth token store at the moment the
session authenticates (so a long-lived connection object never holds a token). When the grant
is missing or refused, the token store raises :class:`~konvergo.errors.AuthorizationError`;
the outbox then holds the mail until the mailbox is connected again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from konvergo.errors import AuthorizationError
from konvergo.transports.auth import PasswordAuth, XOAuth2Auth

if TYPE_CHECKING:
    from konvergo.store.models import OutgoingServer


def smtp_auth_for(server: OutgoingServer) -> PasswordAuth | XOAuth2Auth | None:
    """The credentials ``server``'s SMTP sessions authenticate with (None: no AUTH)."""
    if server.auth_type == "outlook":
        grant_id = server.grant_id
        label = server.username or server.name

        def token_provider() -> str:
            # Imported here: the token store imports the OAuth client stack, which the
            # password path never needs.
            from konvergo.services.oauth.tokens import access_token

            if grant_id is None:
                raise AuthorizationError(
                    f"{label} is not connected: click 'Connect your Outlook account' on the "
                    f"outgoing server '{server.name}'.",
                    server=server.pk,
                )
            return access_token(grant_id)

        return XOAuth2Auth(server.username, token_provider)
    if server.auth_type == "login" and server.username:
        return PasswordAuth(server.username, server.password)
    return None
