"""Microsoft 365 / Outlook: endpoints, scopes, hosts and the error catalogue."""
