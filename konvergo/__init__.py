"""Konvergo mail: the mail layer of Konvergo ERP (Microsoft 365 / Outlook over OAuth 2.0)."""

__version__ = "0.1.0"
