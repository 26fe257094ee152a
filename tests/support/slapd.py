"""A real OpenLDAP server (Debian's ``slapd``) for the tests and the benchmark.

Everything lives in a private directory: ``slapd.conf`` (old-style config,
``slapd -f``), the schema files Debian does not ship (openssh-lpk, and a
small Active-Directory-like schema with the matching rules AD has), an mdb
database seeded offline with ``slapadd``, and a generated CA and server
certificate.  The server runs in the foreground (``-d 0``) so the Popen pid
is slapd's own: ``stop`` (SIGTERM), ``pause``/``resume`` (SIGSTOP/SIGCONT)
act on exactly that process.  Nothing under ``/etc/ldap`` is touched.

Typical use (see ``tests/test_backend_ldap*.py``)::

    tls = make_tls_files(tmp / "tls")
    with Slapd(tmp / "a", ldif=directory_ldif(), tls=tls) as server:
        server.ldap_uri, server.ldaps_uri, tls.ca_cert
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root-secret"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
SERVICE_DN = f"cn=nxauth,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "service-Secret-1"
NX_DN = f"uid=nx,ou=services,{SUFFIX}"

#: Usernames (uid) and passwords of the seeded people.
PASSWORDS: dict[str, str] = {
    "alice": "wonderland",
    "bob": "builder",
    "carol": "carol-pw",
    "dave": "dave-pw",
    "al*": "star-pw",
    "smith, j": "comma-pw",
    "x+y=z": "plus-pw",
    "#hash": "hash-pw",
    "o'hara": "quote-pw",
    "zoë": "unicode-pw",
    "locked": "locked-pw",
    "lockme": "lockme-pw",
    "mustchange": "mustchange-pw",
    "expiredpw": "expiredpw-pw",
    "jdoe": "jdoe-pw",
    "disabled": "disabled-pw",
    "expired": "expired-pw",
    "changeme": "changeme-pw",
    "ws01$": "machine-pw",
}

OPENSSH_LPK_SCHEMA = """\
# openssh-lpk (the schema of the OpenSSH LDAP public key patch), as commonly
# shipped with sssd and openssh-ldap; Debian does not ship it.
attributetype ( 1.3.6.1.4.1.24552.500.1.1.1.13 NAME 'sshPublicKey'
\tDESC 'OpenSSH Public key'
\tEQUALITY octetStringMatch
\tSYNTAX 1.3.6.1.4.1.1466.115.121.1.40 )
objectclass ( 1.3.6.1.4.1.24552.500.1.1.2.0 NAME 'ldapPublicKey' SUP top AUXILIARY
\tDESC 'OpenSSH LPK objectclass'
\tMAY ( sshPublicKey $ uid ) )
"""

# Debian's msuser.schema defines these attributes without matching rules, so a
# filter on them never matches; this test schema gives them AD's semantics.
_OID = "2.25.226915812349023648714350233458128361234"
ADLIKE_SCHEMA = f"""\
# Active-Directory-like attributes for tests (AD's attribute OIDs, AD's matching).
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
\tEQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName'
\tEQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl'
\tEQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.159 NAME 'accountExpires'
\tEQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.96 NAME 'pwdLastSet'
\tEQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.2.102 NAME 'memberOf'
\tEQUALITY distinguishedNameMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 )
# AD's objectCategory is a DN that AD also matches by its short name
# ("person"); here it is a plain string holding the short name.
attributetype ( 1.2.840.113556.1.2.370 NAME 'objectCategory'
\tEQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( {_OID}.1 NAME 'user' SUP top AUXILIARY
\tMAY ( sAMAccountName $ userPrincipalName $ userAccountControl $ accountExpires $ pwdLastSet $ memberOf
\t$ objectCategory ) )
objectclass ( {_OID}.2 NAME 'group' SUP top STRUCTURAL
\tMUST cn MAY ( member $ description ) )
"""


def slapd_missing() -> str | None:
    """Why slapd cannot run here, or None if it can."""
    for path in (SLAPD, SLAPADD):
        if not os.access(path, os.X_OK):
            return f"{path} not found (apt-get install slapd ldap-utils)"
    for name in ("core", "cosine", "inetorgperson", "nis"):
        if not (SCHEMA_DIR / f"{name}.schema").exists():
            return f"{SCHEMA_DIR}/{name}.schema not found"
    if not (MODULE_DIR / "back_mdb.so").exists():
        return f"{MODULE_DIR}/back_mdb.so not found"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ssha(password: str, salt: bytes | None = None) -> str:
    """``{SSHA}`` (salted SHA-1) as slapd verifies it."""
    salt = os.urandom(8) if salt is None else salt
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


# ------------------------------------------------------------ TLS material


@dataclass(frozen=True)
class TlsFiles:
    """A CA, a server certificate it signed, a client certificate it signed,
    and an unrelated CA (for the must-fail tests).  All paths are PEM files."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path
    wrong_name_cert: Path
    wrong_name_key: Path
    directory: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    *,
    names: Sequence[str] = (),
    addresses: Sequence[str] = (),
    client: bool = False,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    san += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def make_tls_files(
    directory: Path,
    *,
    names: Sequence[str] = ("localhost",),
    addresses: Sequence[str] = ("127.0.0.1",),
) -> TlsFiles:
    """Generate a CA, a server certificate for ``names``/``addresses``, a client
    certificate, a server certificate for the wrong name (``ldap.invalid``,
    same CA) and an unrelated CA into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("nxauth test CA")
    server_key, server_cert = _leaf(ca_key, ca_cert, names[0] if names else "server", names=names, addresses=addresses)
    client_key, client_cert = _leaf(ca_key, ca_cert, "nxauth test client", client=True)
    wrong_key, wrong_cert = _leaf(ca_key, ca_cert, "ldap.invalid", names=("ldap.invalid",))
    _, other_cert = _ca("nxauth unrelated CA")
    files = TlsFiles(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        other_ca_cert=directory / "other-ca.pem",
        wrong_name_cert=directory / "wrong-name.pem",
        wrong_name_key=directory / "wrong-name.key",
        directory=directory,
    )
    pem = serialization.Encoding.PEM
    files.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    files.server_cert.write_bytes(server_cert.public_bytes(pem))
    files.client_cert.write_bytes(client_cert.public_bytes(pem))
    files.other_ca_cert.write_bytes(other_cert.public_bytes(pem))
    files.wrong_name_cert.write_bytes(wrong_cert.public_bytes(pem))
    _write_key(files.wrong_name_key, wrong_key)
    _write_key(files.server_key, server_key)
    _write_key(files.client_key, client_key)
    return files


# ------------------------------------------------------------ LDIF


def _safe(value: str) -> bool:
    """RFC 2849 SAFE-STRING (and no trailing space)."""
    if not value:
        return True
    if value[0] in " :<" or value[-1] == " ":
        return False
    return all(0 < ord(ch) < 128 and ch not in "\r\n" for ch in value)


def ldif_entry(dn: str, attributes: Iterable[tuple[str, str | bytes]]) -> str:
    """One LDIF record; values that are not safe strings are base64-encoded."""
    lines = [f"dn: {dn}" if _safe(dn) else f"dn:: {base64.b64encode(dn.encode()).decode()}"]
    grouped: dict[str, list[str | bytes]] = {}
    for name, value in attributes:  # slapadd wants the values of one attribute together
        grouped.setdefault(name, []).append(value)
    for name, value in ((n, v) for n, values in grouped.items() for v in values):
        if isinstance(value, bytes) or not _safe(value):
            raw = value if isinstance(value, bytes) else value.encode("utf-8")
            lines.append(f"{name}:: {base64.b64encode(raw).decode()}")
        else:
            lines.append(f"{name}: {value}")
    return "\n".join(lines) + "\n\n"


def escape_dn_value(value: str) -> str:
    """RFC 4514 escaping for building the fixture's own DNs (independent of nxauth's)."""
    out = []
    for index, ch in enumerate(value):
        if ch in ',+"\\<>;=' or (index == 0 and ch in "# ") or (index == len(value) - 1 and ch == " "):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def person_dn(uid: str, suffix: str = SUFFIX) -> str:
    return f"uid={escape_dn_value(uid)},ou=people,{suffix}"


def group_dn(cn: str, suffix: str = SUFFIX) -> str:
    return f"cn={escape_dn_value(cn)},ou=groups,{suffix}"


# AD FILETIME: 100-ns intervals since 1601-01-01.
def filetime(when: datetime.datetime) -> int:
    epoch = datetime.datetime(1601, 1, 1, tzinfo=datetime.UTC)
    return int((when - epoch).total_seconds() * 10_000_000)


def _person(uid: str, suffix: str, *extra: tuple[str, str | bytes], password: str | None = None) -> str:
    attrs: list[tuple[str, str | bytes]] = [
        ("objectClass", "inetOrgPerson"),
        ("uid", uid),
        ("cn", uid),
        ("sn", uid),
    ]
    attrs.append(("userPassword", ssha(password if password is not None else PASSWORDS[uid])))
    attrs.extend(extra)
    return ldif_entry(person_dn(uid, suffix), attrs)


def directory_ldif(
    suffix: str = SUFFIX,
    *,
    nx_keys: Sequence[str] = (),
    bulk_users: int = 0,
    bulk_password: str = "bulk-pw",
    referral: str | None = "ldap://127.0.0.1:9/ou=remote,ou=people,dc=example,dc=org",
) -> str:
    """The test directory.

    People (``ou=people``; passwords in :data:`PASSWORDS`): alice (groups
    admins, devs as uniqueMember, wheel as memberUid, memberOf admins; nested:
    staff, everyone), bob (staff, banned), carol (no group), dave (in a
    cycle cyc1 -> cyc2 -> cyc1, and cyc3 above cyc2), users whose uid holds
    filter and DN special characters (``al*``, ``smith, j``, ``x+y=z``,
    ``#hash``, ``o'hara``, ``zoë``), ppolicy users (locked, lockme: locked
    after 3 failures, mustchange, expiredpw), AD-like users (jdoe, disabled,
    expired, changeme: objectClass ``user`` with sAMAccountName, UPN
    ``NAME@corp.example.org``, objectCategory person, userAccountControl,
    accountExpires, pwdLastSet; and ``ws01$``, a computer account).
    ``uid=nx,ou=services`` holds ``nx_keys`` as sshPublicKey.
    ``bulk_users`` adds ``user00000``... with password ``bulk_password``.
    ``ou=remote,ou=people`` is a referral object pointing at ``referral``
    (by default a port where nothing listens): subtree searches of
    ``ou=people`` return a search reference.
    """
    dc = suffix.split(",", maxsplit=1)[0].split("=")[1]
    out = [
        ldif_entry(suffix, [("objectClass", "dcObject"), ("objectClass", "organization"), ("dc", dc), ("o", dc)]),
    ]
    for ou in ("people", "groups", "services", "policies"):
        out.append(ldif_entry(f"ou={ou},{suffix}", [("objectClass", "organizationalUnit"), ("ou", ou)]))
    out.append(
        ldif_entry(
            f"cn=nxauth,ou=services,{suffix}",
            [
                ("objectClass", "organizationalRole"),
                ("objectClass", "simpleSecurityObject"),
                ("cn", "nxauth"),
                ("userPassword", ssha(SERVICE_PASSWORD)),
            ],
        )
    )
    nx: list[tuple[str, str | bytes]] = [
        ("objectClass", "account"),
        ("objectClass", "ldapPublicKey"),
        ("uid", "nx"),
    ]
    nx += [("sshPublicKey", line.encode("utf-8")) for line in nx_keys]
    out.append(ldif_entry(f"uid=nx,ou=services,{suffix}", nx))

    # password policies (ppolicy overlay; applied only through pwdPolicySubentry)
    def policy(cn: str, *attrs: tuple[str, str]) -> str:
        base: list[tuple[str, str | bytes]] = [
            ("objectClass", "device"),
            ("objectClass", "pwdPolicy"),
            ("cn", cn),
            ("pwdAttribute", "userPassword"),
        ]
        return ldif_entry(f"cn={cn},ou=policies,{suffix}", [*base, *attrs])

    out.append(policy("lockout", ("pwdLockout", "TRUE"), ("pwdMaxFailure", "3"), ("pwdLockoutDuration", "0")))
    out.append(policy("mustchange", ("pwdMustChange", "TRUE")))
    out.append(policy("maxage", ("pwdMaxAge", "86400"), ("pwdGraceAuthNLimit", "0")))

    g = lambda cn: group_dn(cn, suffix)  # noqa: E731
    alice = person_dn("alice", suffix)
    out.append(
        _person(
            "alice",
            suffix,
            ("mail", "alice@example.org"),
            ("displayName", "Alice Liddell"),
            ("objectClass", "user"),
            ("memberOf", g("admins")),
            ("memberOf", g("staff")),
        )
    )
    out.append(_person("bob", suffix, ("mail", "bob@example.org")))
    out.append(_person("carol", suffix))
    out.append(_person("dave", suffix))
    for uid in ("al*", "smith, j", "x+y=z", "#hash", "o'hara", "zoë"):
        out.append(_person(uid, suffix))
    lockout = ("pwdPolicySubentry", f"cn=lockout,ou=policies,{suffix}")
    out.append(_person("locked", suffix, lockout, ("pwdAccountLockedTime", "000001010000Z")))
    out.append(_person("lockme", suffix, lockout))
    out.append(
        _person(
            "mustchange", suffix, ("pwdPolicySubentry", f"cn=mustchange,ou=policies,{suffix}"), ("pwdReset", "TRUE")
        )
    )
    out.append(
        _person(
            "expiredpw",
            suffix,
            ("pwdPolicySubentry", f"cn=maxage,ou=policies,{suffix}"),
            ("pwdChangedTime", "20000101000000Z"),
        )
    )
    now = datetime.datetime.now(datetime.UTC)
    ad_users = {
        "jdoe": ("512", "0", str(filetime(now - datetime.timedelta(days=3)))),
        "disabled": ("514", "9223372036854775807", str(filetime(now))),
        "expired": ("512", str(filetime(now - datetime.timedelta(days=1))), str(filetime(now))),
        "changeme": ("512", str(filetime(now + datetime.timedelta(days=30))), "0"),
    }
    out.append(  # a computer account: objectClass user too, but not a person
        _person(
            "ws01$",
            suffix,
            ("objectClass", "user"),
            ("objectCategory", "computer"),
            ("sAMAccountName", "ws01$"),
            ("userAccountControl", "4096"),
        )
    )
    for uid, (uac, expires, last_set) in ad_users.items():
        out.append(
            _person(
                uid,
                suffix,
                ("objectClass", "user"),
                ("objectCategory", "person"),
                ("sAMAccountName", uid),
                ("userPrincipalName", f"{uid}@corp.example.org"),
                ("userAccountControl", uac),
                ("accountExpires", expires),
                ("pwdLastSet", last_set),
                *([("memberOf", g("admins"))] if uid == "jdoe" else []),
            )
        )

    def group(cn: str, *members: str, cls: str = "groupOfNames", attr: str = "member", more: Sequence[Any] = ()) -> str:
        attrs: list[tuple[str, str | bytes]] = [("objectClass", cls), ("cn", cn)]
        attrs += [(attr, m) for m in members]
        attrs += list(more)
        return ldif_entry(g(cn), attrs)

    out.append(group("admins", alice, person_dn("jdoe", suffix)))
    out.append(group("staff", g("admins"), person_dn("bob", suffix)))
    out.append(group("everyone", g("staff")))
    out.append(group("banned", person_dn("bob", suffix)))
    out.append(group("devs", alice, cls="groupOfUniqueNames", attr="uniqueMember"))
    out.append(group("wheel", "alice", cls="posixGroup", attr="memberUid", more=[("gidNumber", "10")]))
    out.append(group("cyc1", g("cyc2"), person_dn("dave", suffix)))
    out.append(group("cyc2", g("cyc1")))
    out.append(group("cyc3", g("cyc2")))
    out.append(group("special", person_dn("smith, j", suffix), person_dn("al*", suffix)))
    if referral is not None:
        out.append(
            ldif_entry(
                f"ou=remote,ou=people,{suffix}",
                [("objectClass", "referral"), ("objectClass", "extensibleObject"), ("ou", "remote"), ("ref", referral)],
            )
        )
    for index in range(bulk_users):
        uid = f"user{index:05d}"
        out.append(_person(uid, suffix, password=bulk_password))
    return "".join(out)


def remote_ldif(suffix: str = SUFFIX) -> str:
    """A second directory holding only ``uid=remoteuser,ou=remote,ou=people``
    (password ``remote-pw``): the target of the referral in :func:`directory_ldif`."""
    dc = suffix.split(",", maxsplit=1)[0].split("=")[1]
    out = [ldif_entry(suffix, [("objectClass", "dcObject"), ("objectClass", "organization"), ("dc", dc), ("o", dc)])]
    for dn, ou in ((f"ou=services,{suffix}", "services"), (f"ou=people,{suffix}", "people")):
        out.append(ldif_entry(dn, [("objectClass", "organizationalUnit"), ("ou", ou)]))
    out.append(
        ldif_entry(
            f"cn=nxauth,ou=services,{suffix}",
            [
                ("objectClass", "organizationalRole"),
                ("objectClass", "simpleSecurityObject"),
                ("cn", "nxauth"),
                ("userPassword", ssha(SERVICE_PASSWORD)),
            ],
        )
    )
    out.append(ldif_entry(f"ou=remote,ou=people,{suffix}", [("objectClass", "organizationalUnit"), ("ou", "remote")]))
    out.append(
        ldif_entry(
            f"uid=remoteuser,ou=remote,ou=people,{suffix}",
            [
                ("objectClass", "inetOrgPerson"),
                ("uid", "remoteuser"),
                ("cn", "r"),
                ("sn", "r"),
                ("userPassword", ssha("remote-pw")),
            ],
        )
    )
    return "".join(out)


# ------------------------------------------------------------ the server


ACCESS_RULES = """\
access to attrs=userPassword
\tby anonymous auth
\tby * none
access to dn.subtree="ou=policies,{suffix}"
\tby * none
access to *
\tby dn.exact="cn=nxauth,ou=services,{suffix}" read
\tby self read
\tby users read
\tby * none
"""


class Slapd:
    """One slapd in ``directory``, listening on ``ldap://`` and (with
    ``tls``) ``ldaps://`` on 127.0.0.1, StartTLS available on the former.

    ``verify_client``: ``TLSVerifyClient demand`` (client certificate
    required).  ``wrong_name``: serve the certificate made for
    ``ldap.invalid`` (signed by the same CA).  ``ppolicy``: load the password-policy overlay
    (``ppolicy_use_lockout``: a locked account's bind says so in the
    response control).  Use as a context manager, or call :meth:`start` and
    :meth:`stop`.
    """

    def __init__(
        self,
        directory: Path,
        *,
        ldif: str,
        tls: TlsFiles | None = None,
        suffix: str = SUFFIX,
        verify_client: bool = False,
        wrong_name: bool = False,
        ppolicy: bool = True,
        threads: int = 4,
    ) -> None:
        self.directory = directory
        self.suffix = suffix
        self.tls = tls
        self.verify_client = verify_client
        self.wrong_name = wrong_name
        self.ppolicy = ppolicy
        self.threads = threads
        self.ldap_port = free_port()
        self.ldaps_port = free_port() if tls is not None else None
        self.process: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._setup(ldif)

    @property
    def ldap_uri(self) -> str:
        return f"ldap://127.0.0.1:{self.ldap_port}"

    @property
    def ldaps_uri(self) -> str:
        if self.ldaps_port is None:
            raise RuntimeError("this slapd has no TLS")
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def config_file(self) -> Path:
        return self.directory / "slapd.conf"

    @property
    def log_file(self) -> Path:
        return self.directory / "slapd.log"

    def _setup(self, ldif: str) -> None:
        d = self.directory
        (d / "db").mkdir(parents=True, exist_ok=True)
        (d / "openssh-lpk.schema").write_text(OPENSSH_LPK_SCHEMA)
        (d / "adlike.schema").write_text(ADLIKE_SCHEMA)
        includes = [str(SCHEMA_DIR / f"{n}.schema") for n in ("core", "cosine", "inetorgperson", "nis")]
        includes += [str(d / "openssh-lpk.schema"), str(d / "adlike.schema")]
        lines = [f"include {path}" for path in includes]
        lines += [
            f"modulepath {MODULE_DIR}",
            "moduleload back_mdb",
            *(["moduleload ppolicy"] if self.ppolicy else []),
            f"pidfile {d / 'slapd.pid'}",
            f"argsfile {d / 'slapd.args'}",
            f"threads {self.threads}",
            "sizelimit 500",
        ]
        if self.tls is not None:
            lines += [
                f"TLSCACertificateFile {self.tls.ca_cert}",
                f"TLSCertificateFile {self.tls.wrong_name_cert if self.wrong_name else self.tls.server_cert}",
                f"TLSCertificateKeyFile {self.tls.wrong_name_key if self.wrong_name else self.tls.server_key}",
                "TLSProtocolMin 3.3",
                f"TLSVerifyClient {'demand' if self.verify_client else 'never'}",
            ]
        lines += [
            "database mdb",
            "maxsize 1073741824",
            f"directory {d / 'db'}",
            f'suffix "{self.suffix}"',
            f'rootdn "cn=admin,{self.suffix}"',
            f"rootpw {ssha(ROOT_PASSWORD)}",
            "dbnosync",
            "index objectClass eq",
            "index uid,cn,sAMAccountName,userPrincipalName eq",
            "index member,uniqueMember,memberUid eq",
            ACCESS_RULES.format(suffix=self.suffix),
        ]
        if self.ppolicy:
            lines += ["overlay ppolicy", "ppolicy_use_lockout"]
        self.config_file.write_text("\n".join(lines) + "\n")
        (d / "data.ldif").write_text(ldif, encoding="utf-8")
        result = subprocess.run(
            [SLAPADD, "-q", "-f", str(self.config_file), "-l", str(d / "data.ldif")],
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"slapadd failed: {result.stderr.decode(errors='replace')[-2000:]}")

    def start(self, timeout: float = 10.0) -> None:
        """Start slapd and wait until its ports accept connections."""
        if self.process is not None and self.process.poll() is None:
            return
        urls = self.ldap_uri + "/"
        if self.ldaps_port is not None:
            urls += " " + self.ldaps_uri + "/"
        log = self.log_file.open("ab")
        try:
            self.process = subprocess.Popen(
                [SLAPD, "-f", str(self.config_file), "-h", urls, "-d", "0"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        self._paused = False
        deadline = time.monotonic() + timeout
        ports = [p for p in (self.ldap_port, self.ldaps_port) if p is not None]
        while ports:
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", ports[0]), timeout=0.2):
                    ports.pop(0)
                    continue
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"slapd did not listen within {timeout}s: {self.log_tail()}") from None
                time.sleep(0.01)

    def log_tail(self, size: int = 2000) -> str:
        try:
            return self.log_file.read_bytes()[-size:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM (after SIGCONT if paused) and wait; SIGKILL after 5 s."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        if self._paused:
            process.send_signal(signal.SIGCONT)
            self._paused = False
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nothing answers."""
        if self.process is None:
            raise RuntimeError("slapd is not running")
        self.process.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        if self.process is not None and self._paused:
            self.process.send_signal(signal.SIGCONT)
        self._paused = False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> Slapd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
