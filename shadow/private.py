"""Private files and folders: what shadow writes is readable by its own user only.

The `shadow` command sets the umask to 077 first thing (`restrict_umask`), so every file it or
its children create (SQLite's database, -wal and -shm, the embedded Redis's append-only files
and log, key files, metrics files) is 0600 and every folder 0700, whatever the shell's umask.
Folders and files that already exist (from an older version, or made by hand) are tightened
when shadow finds them (`make_private`). Secrets shadow reads from files (keys, the API
token) must be in files only their owner can read (`read_private_file`).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from shadow.errors import ConfigError

log = logging.getLogger("shadow.files")

UMASK = 0o077
FILE_MODE = 0o600
DIR_MODE = 0o700
_OPEN_TO_OTHERS = 0o077  # any permission for group or others


def restrict_umask() -> int:
    """Files 0600, folders 0700 from now on, for this process and every child it starts."""
    return os.umask(UMASK)


def make_private(path: str | Path) -> None:
    """Take group's and others' permissions off `path` and, for a folder, everything under
    it (what an older version or a looser umask left). Symbolic links are not followed. A
    folder owned by someone else is reported: they, and whoever they let in, can still
    reach what shadow writes there."""
    root = Path(path)
    _tighten(root, report_owner=True)
    if root.is_dir() and not root.is_symlink():
        for folder, dirs, files in os.walk(root):
            for name in (*dirs, *files):
                _tighten(Path(folder) / name)


def _tighten(path: Path, *, report_owner: bool = False) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        return
    if report_owner and st.st_uid != os.geteuid():
        log.warning("%s belongs to user id %d, not to this user (%d): shadow's files there are "
                    "only as private as that user keeps them; chown it or choose another folder",
                    path, st.st_uid, os.geteuid())
    loose = stat.S_IMODE(st.st_mode)
    if loose & _OPEN_TO_OTHERS:
        try:
            os.chmod(path, loose & ~_OPEN_TO_OTHERS)
        except OSError as e:
            log.warning("%s is mode %04o and could not be made private (%s): run `chmod go-rwx "
                        "%s`", path, loose, e.strerror or e, path)
        else:
            log.info("%s was mode %04o: made private (%04o)", path, loose,
                     loose & ~_OPEN_TO_OTHERS)


def ensure_private_dir(path: str | Path) -> Path:
    """Create `path` (0700, with its parents) or make the existing folder private."""
    folder = Path(path)
    folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    make_private(folder)
    return folder


def make_private_files(paths: Iterable[str | Path]) -> None:
    """The files among `paths` that exist lose group's and others' permissions (a SQLite
    store outside the data folder, its -wal and -shm)."""
    for path in paths:
        _tighten(Path(path))


def read_private_file(path: str | Path, what: str) -> str:
    """The text of a secret's file, refused unless only its owner can read it. `what` names
    the setting in errors (e.g. `--secret-key-file`); the content never appears in one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY)
    except FileNotFoundError:
        raise ConfigError(f"{what}: {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"{what}: cannot read {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)  # the file opened, not whatever the name points to by now
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{what}: {path} is not a regular file")
        if stat.S_IMODE(st.st_mode) & _OPEN_TO_OTHERS:
            raise ConfigError(f"{what}: {path} can be read or changed by other users (mode "
                              f"{stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}`")
        with os.fdopen(os.dup(fd), "rb") as file:
            data = file.read()
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what}: {path} is not text") from None


def write_private_file(path: str | Path, text: str) -> None:
    """Create `path` with mode 0600 (never replacing an existing file) and write `text`,
    flushed to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # whatever the umask
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
