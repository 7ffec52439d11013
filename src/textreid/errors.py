"""How the ``textreid`` command reports a failure: one line naming the culprit, and an exit status.

Exit statuses: 0 success; 1 ``data check`` found problems, or an internal error (a bug: the line
says so and ``--debug`` shows the traceback); 2 a problem with the user's input (configuration,
data, checkpoint, index, request, files, disk); 130 / 143 interrupted by SIGINT / SIGTERM.
"""

from __future__ import annotations

import errno
import json

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_SIGINT = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_SIGTERM = 143  # 128 + SIGTERM

_OS_MESSAGES = {  # errno -> what the user is told before the path
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "file not found",
    errno.EISDIR: "is a directory, not a file",
    errno.ENOTDIR: "not a directory",
    errno.ENAMETOOLONG: "file name too long",
    errno.EMFILE: "too many open files",
    errno.EADDRINUSE: "address already in use",
    errno.EADDRNOTAVAIL: "address not available on this machine",
}

_LABELS = {  # project error type -> prefix of its message
    "ConfigError": "config error",
    "DataError": "data error",
    "CheckpointError": "checkpoint error",
    "ClipWeightsError": "CLIP weights error",
}


def one_line(text: str) -> str:
    """Collapse a message to one line (multi-line messages are joined with "; ")."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _os_message(exc: OSError) -> str:
    what = _OS_MESSAGES.get(exc.errno) if exc.errno is not None else None
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    if what and paths:
        return f"{what}: {' -> '.join(paths)}"
    if paths:
        return f"{(exc.strerror or str(exc)).lower()}: {' -> '.join(paths)}"
    return one_line(str(exc))  # our own FileNotFoundError messages name the file in the text


def _data_message(exc: Exception) -> str:
    problems = getattr(exc, "problems", None) or []
    if len(problems) <= 1:
        return one_line(str(exc)) if not problems else f"data error: {problems[0]}"
    first = one_line(str(exc)).split(";")[0].rstrip(":")
    return (f"data error: {first}; the first: {problems[0]} (`textreid data check` lists them all)")


def describe(exc: BaseException) -> tuple[int, str]:
    """(exit status, one-line message) for an exception that ended a command."""
    name = type(exc).__name__
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_SIGINT, "interrupted"
    if name == "DataError":
        msg = _data_message(exc)
        return EXIT_USAGE, msg if msg.startswith("data error") else f"data error: {msg}"
    if name in _LABELS:
        return EXIT_USAGE, f"{_LABELS[name]}: {one_line(str(exc))}"
    if isinstance(exc, OSError):
        return EXIT_USAGE, _os_message(exc)
    if isinstance(exc, json.JSONDecodeError):
        return EXIT_USAGE, f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
    if isinstance(exc, UnicodeDecodeError):
        return EXIT_USAGE, f"not UTF-8 text (bad byte at offset {exc.start}): {one_line(str(exc))}"
    if name == "OutOfMemoryError":  # torch's: a setting (batch size) the user can change
        return EXIT_USAGE, f"out of memory (lower SOLVER.IMS_PER_BATCH or TEST.IMS_PER_BATCH): {one_line(str(exc))}"
    if _is_user_error(exc):
        return EXIT_USAGE, f"error: {one_line(str(exc))}"
    return EXIT_INTERNAL, (f"internal error: {name}: {one_line(str(exc))} (a bug in textreid; run again with "
                           f"--debug for the traceback and report it)")


def _is_user_error(exc: BaseException) -> bool:
    """Errors about values the user gave: ValueError (the project's own types derive from it), a
    diverging loss, unreadable YAML, and any other error type defined by textreid itself."""
    import yaml

    own = type(exc).__module__.startswith("textreid.") and type(exc).__name__.endswith("Error")
    return isinstance(exc, (ValueError, FloatingPointError, yaml.YAMLError)) or own
