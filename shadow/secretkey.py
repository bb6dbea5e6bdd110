"""Where the secret key comes from: a 0600 key file, SHADOW_SECRET_KEY, or (under `shadow up`)
a key made once in the data folder.

Sources, one of:
  secret_key_file (--secret-key-file FILE, or in shadow.toml)  a 0600 file holding the key
  SHADOW_SECRET_KEY (environment only, never a flag)           the key itself, base64
and, for a rotation, previous_secret_key_files (comma-separated key files): keys that still
open the events they sealed. `shadow up` with none of them makes <data_dir>/secret.key (0600)
on its first start and reuses it after; its children get its path in their environment.
The proxy and the subscriber must share the key.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from shadow.errors import ConfigError
from shadow.private import read_private_file, write_private_file
from shadow.sealing import Keyring, SecretKey

if TYPE_CHECKING:
    from shadow.settings import Settings

log = logging.getLogger("shadow.keys")

KEY_FILE_NAME = "secret.key"

HOW_TO_MAKE_ONE = (
    "make one with `shadow keygen -o shadow.key` and pass --secret-key-file shadow.key (or "
    "secret_key_file in shadow.toml, or SHADOW_SECRET_KEY=\"$(shadow keygen)\" in the "
    "environment); give the proxy and the subscriber the same key (`shadow up` makes one in "
    "its --data-dir by itself)")


def read_key_file(path: str | Path, what: str) -> SecretKey:
    """The key in a 0600 key file; ConfigError (naming `what` and the path) otherwise."""
    return SecretKey.from_text(read_private_file(path, what), f"{what}: {path}")


def write_key_file(path: str | Path, key: SecretKey) -> None:
    """A new key file, 0600. Never replaces a file: an overwritten key could no longer open
    the events it sealed."""
    try:
        write_private_file(path, key.to_text() + "\n")
    except FileExistsError:
        raise ConfigError(f"{path} already exists; shadow never overwrites a key file (what the "
                          "old key sealed could no longer be opened): choose another name, or "
                          "remove it first") from None
    except OSError as e:
        raise ConfigError(f"cannot write the key file {path}: {e.strerror or e}") from None


def configured(settings: Settings) -> bool:
    """Whether the settings name a key (a file or SHADOW_SECRET_KEY)."""
    return bool(settings.secret_key or settings.secret_key_file)


def data_dir_key(data_dir: str | Path) -> Path:
    """`shadow up` without a configured key: <data_dir>/secret.key, made on the first start
    and reused after (the folder must exist). Returns its absolute path."""
    path = Path(data_dir).resolve() / KEY_FILE_NAME
    if not path.exists():
        try:
            write_private_file(path, SecretKey.generate().to_text() + "\n")
        except FileExistsError:
            pass  # made meanwhile by another start: use that one
        else:
            log.info("made a new secret key in %s (it seals replayed credentials and keys "
                     "redaction tokens; keep it with the data)", path)
    return path


def load_keyring(settings: Settings) -> Keyring:
    """The keyring the settings describe: the current key from SHADOW_SECRET_KEY or
    secret_key_file, the previous ones from previous_secret_key_files. A ConfigError that says
    what to do when none is set, both are, or a file is missing, unreadable, open to other
    users or does not hold a key."""
    if settings.secret_key and settings.secret_key_file:
        raise ConfigError("both SHADOW_SECRET_KEY and --secret-key-file are set: keep one")
    if settings.secret_key:
        current = SecretKey.from_text(settings.secret_key, "SHADOW_SECRET_KEY")
    elif settings.secret_key_file:
        current = read_key_file(settings.secret_key_file, "--secret-key-file")
    else:
        raise ConfigError(f"no secret key: {HOW_TO_MAKE_ONE}")
    previous = [read_key_file(path.strip(), "--previous-secret-key-files")
                for path in (settings.previous_secret_key_files or "").split(",") if path.strip()]
    return Keyring(current, previous)
