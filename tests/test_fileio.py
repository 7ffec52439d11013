"""Atomic writes: permissions follow the umask; leftovers of killed writes are swept, nothing else."""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from textreid.fileio import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    remove_stale_temporaries,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int, expected: int) -> None:
    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "m.json", {"a": 1})
        atomic_write_bytes(tmp_path / "b.bin", b"x", durable=False)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "m.json") == expected
    assert _mode(tmp_path / "b.bin") == expected
    with open(tmp_path / "plain", "w"):  # what open() would have made, for comparison
        pass
    assert _mode(tmp_path / "plain") == 0o666 & ~old


def _our_host() -> str:
    """The host part of this machine's temporary names, read off a real write in progress."""
    folder = Path(tempfile.mkdtemp())
    with atomic_open(folder / "probe", "wb"):
        (temp,) = [p.name for p in folder.iterdir()]
    # .probe.textreid-<host>.<pid>.<random>.tmp; the host part holds letters, digits and '-' only
    return temp.split(".")[2].removeprefix("textreid-")


def _temp_name(target: str, pid: int, host: str | None = None) -> str:
    host = _our_host() if host is None else host
    return f".{target}.textreid-{host}.{pid}.abc123_x.tmp"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_are_removed_on_the_next_write(tmp_path: Path) -> None:
    dead = tmp_path / _temp_name("best.pth", _dead_pid())  # a writer killed mid-write
    alive = tmp_path / _temp_name("last.pth", os.getppid())  # a concurrent writer, still running
    old_alive = tmp_path / _temp_name("epoch.pth", os.getppid())  # pid alive (reused?) but untouched for hours
    elsewhere = tmp_path / _temp_name("x.pth", _dead_pid(), host="another-node")  # pid means nothing here
    theirs = [tmp_path / ".notes.txt.tmp", tmp_path / ".best.pth.abc.tmp", tmp_path / "keep.pth"]
    for p in [dead, alive, old_alive, elsewhere, *theirs]:
        p.write_bytes(b"partial")
    hours_ago = time.time() - 3 * 3600
    os.utime(old_alive, (hours_ago, hours_ago))

    atomic_write_json(tmp_path / "metrics.json", {"R1": 1.0})

    left = {p.name for p in tmp_path.iterdir()}
    assert dead.name not in left and old_alive.name not in left
    assert {alive.name, elsewhere.name, "metrics.json", *(p.name for p in theirs)} <= left
    assert not list(tmp_path.glob(".metrics.json.*"))


def test_sweep_only_once_per_folder_and_only_ours(tmp_path: Path) -> None:
    stale = tmp_path / _temp_name("a.pth", _dead_pid())
    stale.write_bytes(b"")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert remove_stale_temporaries(tmp_path) == []
    assert _our_host() == "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname())[:40]


def test_a_failed_write_names_the_path_and_leaves_the_old_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "best.pth"
    target.write_bytes(b"previous")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)  # fileio calls os.fsync
    with pytest.raises(OSError) as info:
        atomic_write_bytes(target, b"new contents")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["best.pth"]
