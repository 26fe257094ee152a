"""Issue 17, class 6: every path a user or client can point nxauth at (the
config file, ``{file=...}`` secrets, the ``SSH_USER_AUTH`` file,
authorized_keys files, key and import files on the command line) is read
only if it is a small regular file.  A FIFO, a device or a directory gets a
clear error at once, never a hang, and a huge file is refused by its size.

(At the top of tests/unit because one property runs through several
packages; each case names the reader it covers.)"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nxauth.backends.authorized_keys import AuthorizedKeysFile
from nxauth.cli import EXIT_OK, main
from nxauth.config import SecretRef, load_config
from nxauth.errors import BackendError, ConfigError
from nxauth.integrations.openssh import transport_keys_from_user_auth
from nxauth.keys.authorized_keys import read_authorized_keys
from tests.support.files import returns_at_once, special_path

# the documented bounds (imported lazily where nxauth names them, so that the
# file also runs against the code before the fix and shows what failed there)
CONFIG_LIMIT = 1024 * 1024
AUTHORIZED_KEYS_LIMIT = 16 * 1024 * 1024

KINDS = ["fifo", "directory", "dev-null", "dev-tty", "huge"]


def _path(tmp_path: Path, kind: str, limit: int) -> Path:
    if kind == "dev-tty" and not os.path.exists("/dev/tty"):
        pytest.skip("no /dev/tty")
    return special_path(tmp_path, kind, huge=limit + 1)


def _refused(tmp_path: Path, kind: str, limit: int, call: Callable[[Path], object]) -> object:
    path = _path(tmp_path, kind, limit)
    return returns_at_once(lambda: call(path), fifo=path if kind == "fifo" else None)


@pytest.mark.parametrize("kind", KINDS)
def test_config_file(tmp_path: Path, kind: str) -> None:
    outcome = _refused(tmp_path, kind, CONFIG_LIMIT, load_config)
    assert isinstance(outcome, ConfigError), outcome
    if kind != "dev-tty":  # /dev/tty may also be ENXIO (no terminal): still an error at once
        assert "regular file" in str(outcome) or "larger than" in str(outcome), outcome


@pytest.mark.parametrize("kind", KINDS)
def test_secret_file(tmp_path: Path, kind: str) -> None:
    def resolve(path: Path) -> object:
        return SecretRef(file=str(path)).resolve(source="nxauth.toml", key="backends.x.bind_password")

    outcome = _refused(tmp_path, kind, 64 * 1024, resolve)
    assert isinstance(outcome, ConfigError), outcome
    assert outcome.key == "backends.x.bind_password"


@pytest.mark.parametrize("kind", [*KINDS, "dev-zero"])
def test_ssh_user_auth_file(tmp_path: Path, kind: str) -> None:
    # a client-controlled environment may name anything: no key, at once
    outcome = _refused(tmp_path, kind, 256 * 1024, lambda path: transport_keys_from_user_auth(str(path)))
    assert outcome == [], outcome


def test_ssh_user_auth_zero_is_refused_not_read(tmp_path: Path) -> None:
    from nxauth.files import UnsafeFile, read_small

    with pytest.raises(UnsafeFile) as caught:
        read_small("/dev/zero", limit=256 * 1024)
    assert caught.value.kind == "device"


@pytest.mark.parametrize("kind", KINDS)
def test_authorized_keys_file_reader(tmp_path: Path, kind: str) -> None:
    outcome = _refused(tmp_path, kind, AUTHORIZED_KEYS_LIMIT, read_authorized_keys)
    assert isinstance(outcome, OSError), outcome


@pytest.mark.parametrize("kind", ["fifo", "directory", "dev-null"])
def test_authorized_keys_backend(tmp_path: Path, kind: str) -> None:
    def keys(path: Path) -> object:
        return list(AuthorizedKeysFile(path, account="nx").authorized_keys("nx"))

    outcome = _refused(tmp_path, kind, AUTHORIZED_KEYS_LIMIT, keys)
    assert isinstance(outcome, BackendError), outcome


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "nxauth.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    return path


# the import bound (256 MiB) is too large to fill here: read_small's bound is tested below
@pytest.mark.parametrize(
    ("kind", "command"),
    [(kind, ["keys", "add"]) for kind in KINDS] + [(kind, ["import"]) for kind in KINDS if kind != "huge"],
)
def test_cli_input_files(
    tmp_path: Path, config: Path, kind: str, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    limit = 1024 * 1024
    outcome = _refused(tmp_path, kind, limit, lambda path: main(["--config", str(config), *command, str(path)]))
    assert outcome != EXIT_OK, capsys.readouterr()
    assert isinstance(outcome, int), outcome  # a clean exit code, not a traceback
    err = capsys.readouterr().err
    assert "cannot read" in err or "no keys" in err or "nothing" in err, err


@pytest.mark.parametrize("kind", ["fifo", "directory", "dev-null"])
def test_cli_config_option(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    outcome = _refused(tmp_path, kind, CONFIG_LIMIT, lambda path: main(["--config", str(path), "check"]))
    assert outcome not in (EXIT_OK, None), capsys.readouterr()
    assert "regular file" in capsys.readouterr().err


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(min_value=0, max_value=5000), limit=st.integers(min_value=0, max_value=5000))
def test_read_small_is_exact_about_its_bound(tmp_path_factory: pytest.TempPathFactory, size: int, limit: int) -> None:
    from nxauth.config.parse import CONFIG_LIMIT as NAMED_CONFIG_LIMIT
    from nxauth.files import UnsafeFile, read_small
    from nxauth.keys.authorized_keys import AUTHORIZED_KEYS_LIMIT as NAMED_KEYS_LIMIT

    assert (NAMED_CONFIG_LIMIT, NAMED_KEYS_LIMIT) == (CONFIG_LIMIT, AUTHORIZED_KEYS_LIMIT)
    path = tmp_path_factory.mktemp("bound") / "file"
    data = os.urandom(size)
    path.write_bytes(data)
    if size <= limit:
        assert read_small(path, limit=limit) == data
    else:
        with pytest.raises(UnsafeFile) as caught:
            read_small(path, limit=limit)
        assert caught.value.kind == "too-large"
