"""SANDBOX ONLY: put messages straight into the Maildir folders the sandbox Dovecot serves.

Both the SMTP server (delivery of accepted mail to sandbox mailboxes, and the Sent Items
copy Exchange keeps of every SMTP submission) and tests (a mailbox with thousands of
messages, in milliseconds) write here. Files follow the Maildir rules (write in ``tmp/``,
rename into ``new/`` or ``cur/``) so a running Dovecot picks them up on its next sync, and
they belong to the uid the Dovecot userdb runs mail processes as.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path

INBOX = "INBOX"
SENT_ITEMS = "Sent Items"


class Maildrop:
    """Writes messages into ``<mail_root>/<upn>/Maildir`` (Dovecot's ``home=<mail_root>/%Lu``)."""

    def __init__(self, mail_root: Path, *, uid: int = -1, gid: int = -1) -> None:
        self.mail_root = Path(mail_root)
        self.uid = uid
        self.gid = gid
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")

    def home(self, upn: str) -> Path:
        return self.mail_root / upn.lower()

    def folder_path(self, upn: str, folder: str = INBOX) -> Path:
        """The Maildir++ directory of ``folder`` (subfolders are ``.Name`` beside ``cur/``)."""
        root = self.home(upn) / "Maildir"
        if folder.upper() == INBOX:
            return root
        return root / ("." + folder.replace("/", "."))

    def ensure_folder(self, upn: str, folder: str = INBOX) -> Path:
        path = self.folder_path(upn, folder)
        created: list[Path] = []
        for p in (self.home(upn), self.home(upn) / "Maildir", path):
            if not p.exists():
                p.mkdir(mode=0o700, parents=True, exist_ok=True)
                created.append(p)
        for sub in ("cur", "new", "tmp"):
            p = path / sub
            if not p.exists():
                p.mkdir(mode=0o700, exist_ok=True)
                created.append(p)
        if path != self.home(upn) / "Maildir" and not (path / "maildirfolder").exists():
            # Maildir++ marks subfolders with this empty file.
            (path / "maildirfolder").touch()
            created.append(path / "maildirfolder")
        for p in created:
            self._chown(p)
        return path

    def deliver(self, upn: str, raw: bytes, folder: str = INBOX, *, seen: bool = False) -> Path:
        """Store one message; returns its file. ``seen`` files go to ``cur/`` with the S flag."""
        return self.deliver_many(upn, [raw], folder, seen=seen)[0]

    def deliver_many(
        self, upn: str, messages: Iterable[bytes], folder: str = INBOX, *, seen: bool = False
    ) -> list[Path]:
        """Store many messages quickly (no Dovecot round trip); UIDs follow the given order."""
        path = self.ensure_folder(upn, folder)
        out: list[Path] = []
        now = time.time()
        for raw in messages:
            # Maildir keeps LF line ends; Dovecot turns them back into CRLF on the wire.
            data = raw.replace(b"\r\n", b"\n")
            with self._lock:
                n = next(self._counter)
            # A zero-padded counter in the name keeps the files' sort order = delivery order.
            # S= and W= (the size with CRLF line ends, RFC822.SIZE) as Dovecot's own delivery
            # writes them: Dovecot then answers RFC822.SIZE without reading every file, as
            # Exchange answers it from a stored property.
            virtual = len(data) + data.count(b"\n")
            base = f"{int(now)}.M{n:09d}P{os.getpid()}.{self._host},S={len(data)},W={virtual}"
            tmp = path / "tmp" / base
            tmp.write_bytes(data)
            self._chown(tmp)
            final = path / ("cur" if seen else "new") / (base + (":2,S" if seen else ""))
            os.rename(tmp, final)
            out.append(final)
        return out

    def message_files(self, upn: str, folder: str = INBOX) -> list[Path]:
        path = self.folder_path(upn, folder)
        return sorted(
            [*(path / "new").glob("*"), *(path / "cur").glob("*")] if path.exists() else []
        )

    def _chown(self, path: Path) -> None:
        if self.uid >= 0 and os.geteuid() == 0:
            os.chown(path, self.uid, self.gid)
