"""Secrets at rest (encryption), secrets in logs (redaction)."""
