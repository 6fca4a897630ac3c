"""Errors of the MIME layer.

::

    KonvergoError
    └── UnparseableMessage(ValueError)   the bytes are not an RFC 5322 message at all

Everything short of that is parsed as well as possible and reported in
``ParsedMessage.defects``; bad *outgoing* input raises :class:`konvergo.errors.ValidationFailed`.
"""

from __future__ import annotations

from konvergo.errors import KonvergoError


class UnparseableMessage(KonvergoError, ValueError):
    """The bytes cannot be read as a mail message (empty, or no header fields at all).

    The intake stores such bytes in quarantine with ``str(error)`` as the reason.
    """
