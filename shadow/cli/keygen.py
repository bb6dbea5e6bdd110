"""`shadow keygen [-o FILE]`: a new secret key, printed or written to a new 0600 file."""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys

from shadow.sealing import SecretKey
from shadow.secretkey import write_key_file


def cmd_keygen(args: argparse.Namespace) -> int:
    key = SecretKey.generate()
    if args.output:
        write_key_file(args.output, key)
        print(f"shadow: wrote a new key (id {key.key_id}) to {args.output}, mode 0600; give it "
              f"to the proxy and the subscriber: --secret-key-file {args.output}",
              file=sys.stderr)
        return 0
    _private_stdout()
    print(key.to_text(), flush=True)
    return 0


def _private_stdout() -> None:
    """`shadow keygen > FILE`: the shell created FILE with its own umask (often 0644); make it
    0600 before the key is written into it. A pipe or a terminal is left alone."""
    with contextlib.suppress(OSError, ValueError):
        fd = sys.stdout.fileno()
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
            os.fchmod(fd, 0o600)
