"""Atomic file writes: a temporary file in the target's folder, fsync, then rename into place.

A crash or Ctrl-C at any moment leaves either the previous file or the complete new one, never
a truncated file that looks valid (checkpoints, metrics, annotations, word tables, pages).

Written files get the usual ``0o666 & ~umask`` permissions (``mkstemp`` alone would make them
0600). Temporary names say who wrote them (``.<name>.textreid-<host>.<pid>.<random>.tmp``), so
the first write of a process to a folder can remove the leftovers of killed writers there: those
whose process is gone (same host) or that have not been touched for ``STALE_AFTER_S``. Files of
other programs and temporaries of live writers are never touched.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

STALE_AFTER_S = 3600.0  # a temporary file untouched this long belongs to no running write
_TAG = "textreid-"
_TEMP_RE = re.compile(r"^\..+\." + _TAG + r"(?P<host>[A-Za-z0-9-]*)\.(?P<pid>\d+)\.[a-z0-9_]+\.tmp$")
_swept: set[str] = set()  # folders already cleaned by this process
_lock = threading.Lock()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]


def _umask() -> int:
    """The process umask, read without changing it where possible (changing it races other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str | Path, *, now: float | None = None) -> list[Path]:
    """Delete this module's temporary files in ``folder`` left by killed writes; returns them."""
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    host = _host()
    for entry in entries:
        match = _TEMP_RE.match(entry.name)
        if not match or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(match["pid"])
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        dead = match["host"] == host and pid != os.getpid() and not _pid_alive(pid)
        if dead or age > STALE_AFTER_S:
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def _sweep_once(folder: Path) -> None:
    key = os.path.abspath(folder)
    with _lock:
        if key in _swept:
            return
        _swept.add(key)
    remove_stale_temporaries(folder)


def _with_path(exc: OSError, path: Path) -> OSError:
    """The same error naming ``path`` when the failing call (write, fsync) did not name a file."""
    if exc.filename is not None or exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))


def _disk_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", *, encoding: str | None = None,
                durable: bool = True) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path``, else it is removed.

    ``durable`` also fsyncs the data and the folder, so the new file survives a power loss; without
    it the write is still atomic for crashes of this process (cheaper for thousands of small files).
    OS errors name ``path``; a write that fails on a full disk (some writers, e.g. ``torch.save``,
    report it as another error) raises ``OSError(ENOSPC)`` naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_TAG}{_host()}.{os.getpid()}.", suffix=".tmp",
                               dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            if hasattr(os, "fchmod"):  # mkstemp makes 0600; written files follow the umask like open()'s
                os.fchmod(f.fileno(), 0o666 & ~_umask())
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _with_path(exc, path) from exc
    except Exception as exc:
        Path(tmp).unlink(missing_ok=True)
        if _disk_full(path.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable where the platform allows it."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path: str | Path, data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb", durable=durable) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")
