"""Atomic writes: nothing half-written is ever left where a finished artefact is expected.

Write into a temporary sibling (same filesystem), fsync, then ``os.replace``/rename into place.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_dir", "atomic_write_bytes", "atomic_write_text", "fsync_tree"]


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (so a rename publishes complete data)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # read once at import; mkstemp/mkdtemp create 0600/0700, renames would keep that
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), FILE_MODE)  # the permissions a plain open() would give
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _dead_leftovers(final: Path, kind: str) -> list[Path]:
    """``.NAME.pidPID.*.partial`` / ``.NAME.old-PID`` folders next to ``final`` whose process is gone."""
    pattern = f".{glob.escape(final.name)}.pid*.partial" if kind == "partial" else f".{glob.escape(final.name)}.old-*"
    found = []
    for path in final.parent.glob(pattern):
        digits = path.name[len(final.name) + 2 :].removeprefix("pid").removeprefix("old-").split(".")[0]
        if digits.isdigit() and not _pid_alive(int(digits)):
            found.append(path)
    return found


def recover(final: str | os.PathLike[str]) -> bool:
    """Clean up after a process killed while writing ``final`` with :func:`atomic_dir`.

    A kill between the two renames of an overwrite leaves no ``final`` and the previous one aside as
    ``.NAME.old-PID``: it is put back. Temporary folders of dead writers are removed. Returns ``True`` when
    a previous ``final`` was restored.
    """
    final = Path(final)
    if not final.parent.is_dir():
        return False
    for partial in _dead_leftovers(final, "partial"):
        shutil.rmtree(partial, ignore_errors=True)
    olds = sorted(_dead_leftovers(final, "old"), key=lambda p: p.stat().st_mtime)
    restored = False
    if olds and not final.exists():
        os.replace(olds.pop(), final)
        restored = True
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)
    return restored


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``final`` in one rename.

    On any exception the temporary folder is removed and ``final`` is untouched. What an earlier writer
    killed mid-way left behind is cleaned up first (:func:`recover`).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not overwrite:
        from moesaic.errors import ConfigError

        raise ConfigError(f"{final} already exists", "choose another output folder or pass --overwrite")
    recover(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.pid{os.getpid()}.", suffix=".partial", dir=final.parent))
    os.chmod(tmp, DIR_MODE)
    try:
        yield tmp
        fsync_tree(tmp)
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_path(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
