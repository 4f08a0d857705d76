"""Files the project writes and reads back: written so that they cannot half-happen (a temporary file
in the same folder, flushed to disk, renamed into place), damaged ones set aside (renamed, never
deleted), and the disk's refusals (full, read-only, not ours) said in one line that names the path and
the fix (:func:`disk_problem`)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from anthology.errors import StorageError

logger = logging.getLogger("anthology")

#: The errors a user fixes by choosing another place or freeing space.
_FULL = {errno.ENOSPC, errno.EDQUOT}
_REFUSED = {errno.EROFS, errno.EACCES, errno.EPERM}
_SQLITE_DISK = {
    "SQLITE_FULL": errno.ENOSPC,
    "SQLITE_READONLY": errno.EROFS,
    "SQLITE_CANTOPEN": errno.EACCES,
    "SQLITE_PERM": errno.EACCES,
}


#: Free bytes below which a file system counts as full when SQLite reports only an I/O error.
_NEARLY_FULL = 1 << 20


def warn(line: str) -> None:
    """Tell the user something went wrong and was dealt with (the CLI prints ``warning: <line>``)."""
    logger.warning(line)


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Around writes to ``path``: a disk that refuses them raises :class:`StorageError` naming it
    (errors such as a short write carry no file name of their own)."""
    try:
        yield
    except OSError as exc:
        line = disk_problem(exc, path)
        if line is None:
            raise
        raise StorageError(line) from exc


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Make ``path`` with ``write(temporary path)``, then flush it to disk and rename it into place, so
    a killed process or a full disk leaves the old file or the new one, never half of one. A disk that
    refuses raises :class:`StorageError` naming ``path`` (and the temporary file is removed)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with writing(path):
        try:
            write(tmp)
            with tmp.open("rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    _sync_folder(path.parent)
    return path


def _sync_folder(folder: Path) -> None:
    """Flush a rename to disk where the platform allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def set_aside(path: Path) -> Path:
    """Rename a damaged ``path`` to ``<name>.damaged-<UTC time>`` beside it (never deleting it) and
    return the new path; SQLite's side files (``-wal``, ``-shm``) follow it."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    os.replace(path, target)
    for side in ("-wal", "-shm", "-journal"):
        companion = path.with_name(path.name + side)
        if companion.exists():
            os.replace(companion, target.with_name(target.name + side))
    return target


def _errno_of(exc: BaseException) -> int | None:
    if isinstance(exc, sqlite3.Error):
        return _SQLITE_DISK.get(getattr(exc, "sqlite_errorname", "") or "")
    if not isinstance(exc, OSError):
        return None
    if exc.errno is not None:
        return exc.errno
    found = re.search(r"\[errno (\d+)\]", str(exc), re.IGNORECASE)  # pyarrow's wording
    return int(found.group(1)) if found else None


def _mount_point(path: Path) -> Path:
    here = path.absolute()
    while not here.exists() or not os.path.ismount(here):
        if here.parent == here:
            break
        here = here.parent
    return here


def _read_only(path: Path) -> bool:
    """Whether ``path`` (or the folder it would be made in) is on a read-only file system."""
    here = path.absolute()
    while not here.exists() and here.parent != here:
        here = here.parent
    try:
        return bool(os.statvfs(here).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _is_io_error(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorname", "") or "").startswith(
        "SQLITE_IOERR"
    )


def _cause_on_disk(path: Path) -> int | None:
    """What an unexplained write error most likely was: a read-only or (nearly) full file system."""
    if _read_only(path):
        return errno.EROFS
    here = path.absolute()
    while not here.exists() and here.parent != here:
        here = here.parent
    try:
        stat = os.statvfs(here)
    except OSError:
        return None
    return errno.ENOSPC if stat.f_bavail * stat.f_frsize < _NEARLY_FULL else None


def _is_cache(path: Path) -> bool:
    return ".sqlite" in path.name or path.name == "file-hashes.json"


def disk_problem(exc: BaseException, path: str | Path | None = None) -> str | None:
    """One line for a disk that refused a write: full (ENOSPC, EDQUOT, SQLite's "disk is full"),
    read-only (EROFS) or not ours (EACCES, EPERM), naming the path and the fix; ``None`` for any other
    error. ``path`` is the file concerned where the error does not name it (SQLite's never do)."""
    code = _errno_of(exc)
    named = path if path is not None else getattr(exc, "filename", None)
    where = Path(named) if named else None
    if code is None and _is_io_error(exc) and where is not None:
        code = _cause_on_disk(where)  # SQLite says only "disk I/O error"
    if code not in _FULL | _REFUSED:
        return None
    if code in (errno.EACCES, errno.EPERM) and where is not None and _read_only(where):
        code = errno.EROFS  # SQLite says only "unable to open database file"
    if where is not None and _is_cache(where):
        elsewhere = "set $ANTHOLOGY_CACHE or --cache to a file elsewhere (or use --no-cache)"
    else:
        elsewhere = "choose another --out"
    shown = str(where) if where is not None else "a file"
    if code in _FULL:
        disk = _mount_point(where) if where is not None else "its file system"
        return f"no space left to write {shown}: free space on {disk}, or {elsewhere}; finished work is kept"
    if code == errno.EROFS:
        return f"cannot write {shown}: the file system is read-only; {elsewhere}"
    return f"cannot write {shown}: permission denied; fix its permissions or {elsewhere}"
