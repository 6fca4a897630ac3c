"""Every model of Konvergo, one module per concern."""

from konvergo.store.models.audit import AuditEvent
from konvergo.store.models.inbox import (
    Attachment,
    Message,
    QuarantinedMessage,
    Thread,
    ThreadParticipant,
)
from konvergo.store.models.oauth import ConsentLink, OAuthGrant, OAuthState
from konvergo.store.models.outbox import ApiKey, OutboxBody, OutboxItem
from konvergo.store.models.servers import FolderState, IncomingServer, OutgoingServer
from konvergo.store.models.settings import MailSettings, SystemParameter
from konvergo.store.models.users import User

__all__ = [
    "ApiKey",
    "Attachment",
    "AuditEvent",
    "ConsentLink",
    "FolderState",
    "IncomingServer",
    "MailSettings",
    "Message",
    "OAuthGrant",
    "OAuthState",
    "OutboxBody",
    "OutboxItem",
    "OutgoingServer",
    "QuarantinedMessage",
    "SystemParameter",
    "Thread",
    "ThreadParticipant",
    "User",
]
