"""nxauth.files, the one helper for creating paths with modes and reading
small regular files: its modes do not depend on the umask (property over
every umask and depth), and it never follows a final symlink when creating."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nxauth.files import UnsafeFile, make_dirs, open_append, read_small, write_file

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@SETTINGS
@given(
    umask=st.integers(min_value=0, max_value=0o777),
    depth=st.integers(min_value=1, max_value=5),
    file_mode=st.sampled_from([0o600, 0o644, 0o640, 0o400]),
    dir_mode=st.sampled_from([0o700, 0o750, 0o755]),
)
def test_modes_do_not_depend_on_the_umask(
    tmp_path_factory: pytest.TempPathFactory, umask: int, depth: int, file_mode: int, dir_mode: int
) -> None:
    root = tmp_path_factory.mktemp("modes")
    leaf = root.joinpath(*(f"d{i}" for i in range(depth)))
    old = os.umask(umask)  # the suite runs in one thread per process: restored below
    try:
        assert write_file(leaf / "f", b"data", file_mode, dir_mode=dir_mode)
        fd = open_append(leaf / "append", 0o600, dir_mode=dir_mode)
        os.close(fd)
        make_dirs(leaf / "x" / "y", dir_mode)
    finally:
        os.umask(old)
    created = [root.joinpath(*(f"d{i}" for i in range(n + 1))) for n in range(depth)]
    for directory in [*created, leaf / "x", leaf / "x" / "y"]:
        assert _mode(directory) == dir_mode, (directory, oct(umask))
    assert _mode(leaf / "f") == file_mode
    assert _mode(leaf / "append") == 0o600
    assert (leaf / "f").read_bytes() == b"data"
    assert not [p for p in leaf.iterdir() if p.name.endswith(".tmp")]


def test_existing_paths_keep_their_mode(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir(mode=0o755)
    os.chmod(tmp_path / "d", 0o755)
    make_dirs(tmp_path / "d" / "e")
    assert _mode(tmp_path / "d") == 0o755
    assert _mode(tmp_path / "d" / "e") == 0o700


def test_a_directory_another_process_creates_meanwhile_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race CI met with processes opening one new store: the directory
    was missing at the first check and existed at the second."""
    target = tmp_path / "state"
    real = os.path.lexists

    def lexists(path: object) -> bool:
        if Path(str(path)) == target and not target.exists():
            target.mkdir(mode=0o700)  # the other process, between the two checks
        return real(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os.path, "lexists", lexists)
    make_dirs(target / "sub")
    assert (target / "sub").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        make_dirs(tmp_path / "file" / "sub")


def test_write_file_never_replaces_unless_asked(tmp_path: Path) -> None:
    target = tmp_path / "key"
    assert write_file(target, b"first", 0o600)
    assert not write_file(target, b"second", 0o600)
    assert target.read_bytes() == b"first"
    assert write_file(target, b"third", 0o644, replace=True)
    assert target.read_bytes() == b"third"
    assert _mode(target) == 0o644


def test_open_append_does_not_follow_a_symlink_or_write_into_a_fifo(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"")
    (tmp_path / "link").symlink_to(victim)
    with pytest.raises(OSError):
        open_append(tmp_path / "link")
    os.mkfifo(tmp_path / "fifo", 0o600)
    reader = os.open(tmp_path / "fifo", os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(UnsafeFile) as caught:
            open_append(tmp_path / "fifo")
        assert caught.value.kind == "fifo"
    finally:
        os.close(reader)


@pytest.mark.parametrize(("path", "kind"), [("/dev/zero", "device"), ("/dev/null", "device"), ("/", "directory")])
def test_read_small_refuses_special_files(path: str, kind: str) -> None:
    with pytest.raises(UnsafeFile) as caught:
        read_small(path)
    assert caught.value.kind == kind
    assert caught.value.filename == path
    assert "regular file" in caught.value.strerror
