"""Encryption of secrets at rest with MultiFernet.

Keys come from ``KONVERGO_ENCRYPTION_KEYS`` (comma separated): the first encrypts, all
decrypt, so a key rotation is "prepend the new key, run ``konvergo rotate-keys``, drop the
old key".
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.db import models

from konvergo.config import get_config
from konvergo.errors import SecretError

#: Prefix of every ciphertext we store, so a clear value can never pass for a ciphertext.
PREFIX = "fernet:"


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(k) for k in keys])


def fernet() -> MultiFernet:
    """The MultiFernet built from the configured keys."""
    return _fernet(get_config().encryption_keys)


def encrypt(clear: str) -> str:
    """Encrypt ``clear`` with the first key; the result is safe to store."""
    return PREFIX + fernet().encrypt(clear.encode("utf-8")).decode("ascii")


def decrypt(stored: str) -> str:
    """Decrypt a value produced by :func:`encrypt` with any configured key."""
    if not stored.startswith(PREFIX):
        raise SecretError("A stored secret is not encrypted; refusing to use it.")
    try:
        return fernet().decrypt(stored[len(PREFIX) :].encode("ascii")).decode("utf-8")
    except InvalidToken as exc:
        raise SecretError(
            "A stored secret cannot be decrypted with KONVERGO_ENCRYPTION_KEYS: was a key "
            "removed before `konvergo rotate-keys` ran?"
        ) from exc


def rotate(stored: str) -> str:
    """Re-encrypt ``stored`` with the first key (``MultiFernet.rotate``)."""
    if not stored.startswith(PREFIX):
        return encrypt(stored)
    token = fernet().rotate(stored[len(PREFIX) :].encode("ascii"))
    return PREFIX + token.decode("ascii")


class EncryptedTextField(models.TextField):  # type: ignore[type-arg]
    """A text column whose value is encrypted before it reaches the database.

    Python code sees clear text; the column holds ``fernet:<token>``. An empty string stays
    empty (meaning "no secret"), so forms can tell "set" from "unset" without decrypting.
    """

    description = "Encrypted text"

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        if value is None or value == "":
            return value
        return decrypt(value)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt(str(value))
