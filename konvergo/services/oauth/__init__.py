"""OAuth 2.0 for mailboxes: Connect (authorization code + PKCE), and the token store.

``connect`` runs the browser flow; ``tokens`` hands transports a current access token with
one refresh at a time per grant across threads and processes; ``keepalive`` refreshes idle
grants before Microsoft's 90-day inactivity limit.
"""
