"""``python -m tests.run_worker MODE SHARD CLI-ARGS...``: ``captum-entropy`` killed by SIGKILL at one moment.

MODE: ``mid-shard`` (half of shard SHARD's bytes in its temporary file), ``before-index`` (the
shard's file in place, its index line never written), ``torn-index`` (half of its index line).
"""

import io
import json
import os
import signal
import sys

from captum_entropy import _io, runs
from captum_entropy.cli import main


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install(mode: str, shard: int) -> None:
    name = f"shard-{shard:06d}"
    atomic_write, append = _io.atomic_write, runs._append
    if mode == "mid-shard":
        def cut_write(path, write):
            if name not in str(path):
                return atomic_write(path, write)

            def half(f):
                whole = io.BytesIO()
                write(whole)
                f.write(whole.getvalue()[: len(whole.getvalue()) // 2])
                f.flush()
                _die()
            return atomic_write(path, half)
        _io.atomic_write = cut_write
    elif mode in ("before-index", "torn-index"):
        def cut_append(index, record):
            if record["shard"] == shard:
                if mode == "torn-index":
                    line = json.dumps(record) + "\n"
                    with open(index, "a", encoding="utf-8") as f:
                        f.write(line[: len(line) // 2])
                _die()
            append(index, record)
        runs._append = cut_append
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    _install(sys.argv[1], int(sys.argv[2]))
    sys.exit(main(sys.argv[3:]))
