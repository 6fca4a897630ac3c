"""The outgoing TLS context: verification always on, TLS 1.2 or newer, extra CAs only add."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from konvergo.config import reset_config
from konvergo.errors import ConfigurationError
from konvergo.security.tls import client_context, shared_client_context


def test_client_context_requires_a_verified_certificate_for_the_host_name() -> None:
    """The context demands a certificate chain and checks the host name."""
    context = client_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_client_context_refuses_tls_older_than_1_2() -> None:
    """TLS 1.0 and 1.1 are refused, as Exchange Online does (421 4.7.66)."""
    assert client_context().minimum_version >= ssl.TLSVersion.TLSv1_2


def test_an_extra_ca_file_adds_to_the_system_store(ca_file: Path) -> None:
    """A test CA is trusted in addition to the system CAs, not instead of them."""
    system = len(client_context().get_ca_certs())
    extended = client_context(cafile=ca_file).get_ca_certs()
    assert len(extended) == system + 1
    assert client_context(cafile=ca_file).verify_mode == ssl.CERT_REQUIRED


def test_a_ca_bundle_that_is_not_pem_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KONVERGO_CA_BUNDLE pointing at garbage names the setting to fix."""
    bogus = tmp_path / "bundle.pem"
    bogus.write_text("not a certificate")
    monkeypatch.setenv("KONVERGO_CA_BUNDLE", str(bogus))
    reset_config()
    try:
        with pytest.raises(ConfigurationError, match="KONVERGO_CA_BUNDLE"):
            client_context()
    finally:
        monkeypatch.undo()
        reset_config()


def _serials(context: ssl.SSLContext) -> set[int]:
    return {int(str(cert["serialNumber"]), 16) for cert in context.get_ca_certs()}


def _serial(ca: trustme.CA) -> int:
    return int(x509.load_pem_x509_certificate(ca.cert_pem.bytes()).serial_number)


def test_connections_share_a_context_until_the_ca_file_changes(tmp_path: Path) -> None:
    """A rotated CA file is trusted by the very next connection, without a restart."""
    path = tmp_path / "ca.pem"
    first, second = trustme.CA(), trustme.CA()
    first.cert_pem.write_to_path(str(path))
    context = shared_client_context(path)
    assert shared_client_context(path) is context  # built once, not per connection
    assert _serial(first) in _serials(context)
    second.cert_pem.write_to_path(str(path))
    later = os.stat(path).st_mtime + 5
    os.utime(path, (later, later))
    rotated = shared_client_context(path)
    assert _serial(second) in _serials(rotated) and _serial(first) not in _serials(rotated)
    assert rotated.verify_mode == ssl.CERT_REQUIRED and rotated.check_hostname
