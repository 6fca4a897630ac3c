"""The web UI and the HTTP API."""
