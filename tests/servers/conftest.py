"""Fixtures shared by the tests that run real servers: one TLS set-up and one
slapd for the whole session (a directory the tests read and log in to, never
stop or change; tests that stop, pause or reconfigure a server start their
own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.ldap import DIRECTORY_NX_KEYS
from tests.support.slapd import Slapd, TlsFiles, directory_ldif, make_tls_files, slapd_missing


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA, a server certificate for 127.0.0.1 and a second CA that signed nothing of it."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def directory(tmp_path_factory: pytest.TempPathFactory, tls: TlsFiles) -> Iterator[Slapd]:
    """The session's slapd: ``directory_ldif`` with transport keys for ``nx``
    (:data:`tests.support.ldap.DIRECTORY_NX_KEYS`), LDAP and LDAPS on 127.0.0.1."""
    reason = slapd_missing()
    if reason is not None:
        pytest.skip(f"slapd is not usable: {reason}")
    with Slapd(tmp_path_factory.mktemp("slapd"), ldif=directory_ldif(nx_keys=DIRECTORY_NX_KEYS), tls=tls) as slapd:
        yield slapd
