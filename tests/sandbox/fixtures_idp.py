"""Fixtures that start the sandbox identity platform (owned by the IdP work)."""
