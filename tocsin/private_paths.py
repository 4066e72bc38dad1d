"""Folders and files only Tocsin's own user may read: the data folder, its databases, the key.

On a machine shared with other users, the journal (the audit trail, the runs' inputs) and
the signing key must not be readable by them. Folders Tocsin creates are mode 0700 and
files 0600, whatever the umask; files are created without following a symbolic link
planted at their name, and replaced atomically (a reader sees the old or the new file).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

PRIVATE_FOLDER_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def private_folder(path: Path) -> Path:
    """Create ``path`` and its missing parents, each mode 0700; an existing folder is kept as it is."""
    missing: list[Path] = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_FOLDER_MODE)
        except FileExistsError:
            continue  # another process created it meanwhile
        os.chmod(folder, PRIVATE_FOLDER_MODE)  # mkdir's mode is filtered by the umask
    return path


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists as a regular file of mode 0600 (created empty when missing).

    An existing file that others may read is narrowed to 0600; a symbolic link is not
    followed (``OSError``). An existing file is never opened: closing a descriptor drops
    every POSIX lock this process holds on the file, and SQLite, whose connections in
    other threads hold such locks, would then let two writers corrupt the database.
    """
    private_folder(path.parent)
    try:
        descriptor = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, PRIVATE_FILE_MODE
        )
    except FileExistsError:
        status = os.lstat(path)
        if stat.S_ISLNK(status.st_mode) or not stat.S_ISREG(status.st_mode):
            raise OSError(errno.ELOOP, "not a regular file (a symbolic link?)", str(path)) from None
        if status.st_mode & 0o077:
            os.chmod(path, PRIVATE_FILE_MODE)
        return path
    try:
        os.fchmod(descriptor, PRIVATE_FILE_MODE)
    finally:
        os.close(descriptor)
    return path


def write_file_atomically(path: Path, content: bytes, *, mode: int = PRIVATE_FILE_MODE) -> None:
    """Write ``content`` to ``path`` through a new file of a random name in the same folder.

    The temporary file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` and ``mode``
    (so a file or link planted there is never reused), flushed to disk, then renamed over
    ``path``; renaming replaces a symbolic link at ``path`` instead of following it.
    """
    folder = path.parent
    temporary = folder / f".{path.name}.{secrets.token_hex(8)}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode)
    try:
        try:
            os.fchmod(descriptor, mode)  # the umask may have narrowed it; never widened
            view = memoryview(content)
            while view:
                view = view[os.write(descriptor, view) :]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_folder(folder)


def _sync_folder(folder: Path) -> None:
    """Make the rename durable (best effort: not every platform opens folders)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
