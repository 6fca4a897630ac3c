"""SANDBOX ONLY: a throwaway certificate authority for the sandbox mail servers.

Tests and developers must verify certificates exactly as they would against Microsoft, so
the sandbox never hands out self-signed server certificates: it makes a local CA (with
``trustme``), issues one server certificate for ``127.0.0.1`` and ``localhost``, and writes
the CA certificate to a PEM file that clients trust with
``ssl.create_default_context(cafile=tls.ca_file)``.
"""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

import trustme

#: Names the server certificate is valid for; only loopback is ever served.
SERVER_NAMES = ("127.0.0.1", "localhost")


class SandboxTLS:
    """A local CA plus one loopback server certificate, written as PEM files to ``directory``."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = Path(directory or tempfile.mkdtemp(prefix="konvergo-tls-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ca = trustme.CA(organization_name="Konvergo sandbox CA")
        self._server = self._ca.issue_cert(*SERVER_NAMES)
        #: The CA certificate clients must trust (PEM).
        self.ca_file = self.directory / "sandbox-ca.pem"
        #: Server certificate chain and key (PEM), for servers configured by file.
        self.cert_file = self.directory / "sandbox-server.pem"
        self.key_file = self.directory / "sandbox-server.key"
        self._ca.cert_pem.write_to_path(str(self.ca_file))
        self._server.cert_chain_pems[0].write_to_path(str(self.cert_file))
        for extra in self._server.cert_chain_pems[1:]:
            extra.write_to_path(str(self.cert_file), append=True)
        self._server.private_key_pem.write_to_path(str(self.key_file))
        self.key_file.chmod(0o600)

    def server_context(self) -> ssl.SSLContext:
        """A server-side context; TLS 1.0/1.1 are refused as Exchange Online refuses them."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self._server.configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only the sandbox CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))
