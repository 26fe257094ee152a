"""TLS of the ldap backend against real slapd servers: LDAPS and StartTLS
verified against the configured CA, refusal of another CA, of a certificate
for another host name, of a server without TLS (no silent fallback to plain
LDAP), a client certificate when the server demands one, and plain LDAP only
with ``insecure = true``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nxauth import Decision, Reason, Secret, Verdict
from nxauth.testing import make_attempt
from tests.support.ldap import build_backend
from tests.support.slapd import (
    PASSWORDS,
    PEOPLE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    Slapd,
    TlsFiles,
    directory_ldif,
    slapd_missing,
)

pytest.importorskip("ldap3")
pytestmark = pytest.mark.skipif(slapd_missing() is not None, reason=f"slapd is not usable: {slapd_missing()}")

DIRECT = {"user_dn": "uid={username},ou=people,dc=example,dc=org"}
SEARCH = {"user_base": PEOPLE, "bind_dn": SERVICE_DN, "bind_password": Secret(SERVICE_PASSWORD)}


def _slapd(factory: pytest.TempPathFactory, **kwargs: Any) -> Iterator[Slapd]:
    with Slapd(factory.mktemp("slapd"), ldif=directory_ldif(), **kwargs) as server:
        yield server


@pytest.fixture
def server(directory: Slapd) -> Slapd:
    """The session's slapd (tests/servers/conftest.py)."""
    return directory


@pytest.fixture(scope="module")
def wrong_name_server(tmp_path_factory: pytest.TempPathFactory, tls: TlsFiles) -> Iterator[Slapd]:
    yield from _slapd(tmp_path_factory, tls=tls, wrong_name=True)


@pytest.fixture(scope="module")
def client_cert_server(tmp_path_factory: pytest.TempPathFactory, tls: TlsFiles) -> Iterator[Slapd]:
    yield from _slapd(tmp_path_factory, tls=tls, verify_client=True)


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    yield from _slapd(tmp_path_factory, tls=None)


@pytest.fixture
def login() -> Iterator[Callable[..., Verdict]]:
    built: list[Any] = []

    def run(username: str = "alice", password: str | None = None, **options: Any) -> Verdict:
        backend = build_backend(options)
        built.append(backend)
        verdict = backend.authenticate(make_attempt(username, password or PASSWORDS[username]))
        assert isinstance(verdict, Verdict)
        return verdict

    yield run
    for backend in built:
        backend.close()


@pytest.mark.parametrize("scheme", ["ldaps", "starttls"])
@pytest.mark.parametrize("mode", ["direct", "search"])
def test_verified_tls_allows(
    login: Callable[..., Verdict], server: Slapd, tls: TlsFiles, scheme: str, mode: str
) -> None:
    uri = server.ldaps_uri if scheme == "ldaps" else server.ldap_uri
    options = DIRECT if mode == "direct" else SEARCH
    assert login(uri=uri, ca_file=str(tls.ca_cert), **options).decision is Decision.ALLOW


def test_ca_directory(login: Callable[..., Verdict], server: Slapd, tls: TlsFiles, tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "ca.pem").write_bytes(tls.ca_cert.read_bytes())
    rehash = subprocess.run(["openssl", "rehash", str(tmp_path)], capture_output=True, check=False)
    if rehash.returncode != 0:
        pytest.skip("openssl rehash is not available")
    assert login(uri=server.ldaps_uri, ca_dir=str(tmp_path), **DIRECT).allowed


@pytest.mark.parametrize("scheme", ["ldaps", "starttls"])
@pytest.mark.parametrize("ca", ["other", "system"])
def test_a_certificate_from_another_ca_is_refused(
    login: Callable[..., Verdict], server: Slapd, tls: TlsFiles, scheme: str, ca: str, caplog: pytest.LogCaptureFixture
) -> None:
    uri = server.ldaps_uri if scheme == "ldaps" else server.ldap_uri
    options: dict[str, Any] = {"ca_file": str(tls.other_ca_cert)} if ca == "other" else {}
    verdict = login(uri=uri, **options, **DIRECT)
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.BACKEND_ERROR)
    assert verdict.detail == "ldap-error"  # the precise reason goes to the log
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text or "certificate verify failed" in caplog.text


@pytest.mark.parametrize("scheme", ["ldaps", "starttls"])
def test_a_certificate_for_another_host_name_is_refused(
    login: Callable[..., Verdict],
    wrong_name_server: Slapd,
    tls: TlsFiles,
    scheme: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    uri = wrong_name_server.ldaps_uri if scheme == "ldaps" else wrong_name_server.ldap_uri
    verdict = login(uri=uri, ca_file=str(tls.ca_cert), **DIRECT)
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.BACKEND_ERROR)
    assert verdict.detail == "ldap-error"
    assert "mismatch" in caplog.text  # "IP address mismatch" / "hostname mismatch"


def test_starttls_is_never_silently_dropped(login: Callable[..., Verdict], plain_server: Slapd, tls: TlsFiles) -> None:
    verdict = login(uri=plain_server.ldap_uri, ca_file=str(tls.ca_cert), **DIRECT)
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.BACKEND_ERROR)


def test_plain_ldap_only_when_insecure_is_said(login: Callable[..., Verdict], plain_server: Slapd) -> None:
    assert login(uri=plain_server.ldap_uri, insecure=True, **DIRECT).allowed
    assert login(uri=plain_server.ldap_uri, insecure=True, **SEARCH).allowed


def test_client_certificate(login: Callable[..., Verdict], client_cert_server: Slapd, tls: TlsFiles) -> None:
    common = {"uri": client_cert_server.ldaps_uri, "ca_file": str(tls.ca_cert), **DIRECT}
    assert login(**common).reason is Reason.BACKEND_ERROR  # the server demands one
    verdict = login(**common, client_cert=str(tls.client_cert), client_key=str(tls.client_key))
    assert verdict.decision is Decision.ALLOW


def test_tls_1_1_is_refused(server: Slapd, tls: TlsFiles) -> None:
    """The client context never offers less than TLS 1.2 (checked on a raw handshake)."""
    import socket
    import ssl

    from nxauth.backends.ldap.connection import make_ssl_context

    context = make_ssl_context(ca_file=str(tls.ca_cert))
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert server.ldaps_port is not None
    with (
        socket.create_connection(("127.0.0.1", server.ldaps_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as wrapped,
    ):
        assert wrapped.version() in ("TLSv1.2", "TLSv1.3")
