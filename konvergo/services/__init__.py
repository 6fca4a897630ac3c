"""Services: the operations the web UI, the API and the CLI share."""
