"""``BDAT`` (RFC 3030 CHUNKING) for aiosmtpd servers, which have only DATA.

Exchange Online offers CHUNKING; the sandbox's SMTP server and the test servers take BDAT the
same way through this class.
"""

from __future__ import annotations

from typing import Any

from aiosmtpd.smtp import MISSING, SMTP


class Bdat(SMTP):
    """aiosmtpd server part: ``BDAT <size> [LAST]`` (RFC 3030), which aiosmtpd lacks.

    Each chunk is read whole before anything is checked (the client sends it without waiting
    for a reply); ``LAST`` hands the message to the handler's ``handle_DATA``, as DATA does.
    After a refused chunk the transaction is refused until RSET, as RFC 3030 allows; a message
    larger than ``data_size_limit`` is refused once its last chunk is read.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._chunks: list[bytes] = []
        self._chunk_failed = False

    def _set_post_data_state(self) -> None:
        super()._set_post_data_state()
        self._chunks = []
        self._chunk_failed = False

    async def smtp_DATA(self, arg: str) -> None:
        if self._chunks or self._chunk_failed:
            # RFC 3030 2: DATA and BDAT cannot be mixed in one transaction.
            await self.push("503 5.5.1 Error: BDAT already started this transaction; RSET")
            return
        await super().smtp_DATA(arg)

    async def smtp_BDAT(self, arg: str) -> None:
        words = arg.split() if arg else []
        if not (1 <= len(words) <= 2 and words[0].isascii() and words[0].isdigit()) or (
            len(words) == 2 and words[1].upper() != "LAST"
        ):
            # The size is unknown, so the chunk cannot be skipped: the session is lost.
            await self.push("501 5.5.4 Syntax: BDAT <size> [LAST]")
            assert self.transport is not None
            self.transport.close()
            return
        chunk = await self._reader.readexactly(int(words[0]))
        last = len(words) == 2
        assert self.envelope is not None
        if await self.check_auth_needed("BDAT"):
            self._chunk_failed = True
            return
        if self._chunk_failed or not self.envelope.rcpt_tos:
            self._chunk_failed = True
            await self.push("503 5.5.1 Error: need MAIL and RCPT, or RSET after a refused chunk")
            return
        self._chunks.append(chunk)
        if self.data_size_limit and sum(map(len, self._chunks)) > self.data_size_limit:
            self._chunk_failed = True
            self._chunks = []
            await self.push("552 5.3.4 Message size exceeds fixed maximum message size")
            return
        if not last:
            await self.push(f"250 2.0.0 {len(chunk)} octets received")
            return
        content = b"".join(self._chunks)
        self.envelope.original_content = content
        self.envelope.content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)
