"""Fixtures that start the sandbox SMTP and IMAP servers (owned by the mail-server work)."""
