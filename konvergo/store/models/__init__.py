"""Every model of Konvergo, one module per concern."""

from konvergo.store.models.audit import AuditEvent
from konvergo.store.models.settings import MailSettings, SystemParameter
from konvergo.store.models.users import User

__all__ = ["AuditEvent", "MailSettings", "SystemParameter", "User"]
