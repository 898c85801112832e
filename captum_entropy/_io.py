"""Atomic file writes (a crash leaves the old file or none, never half a file) and tensors + JSON
metadata in safetensors (never pickle). A leaf: every writer in the package comes through here."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> str:
    """Call ``write(f)`` on a temp file in ``path``'s folder, then move it onto ``path`` (keeping
    an existing file's permissions); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(path)


def leftover_temp_files(path: str | os.PathLike) -> list[Path]:
    """The temp files that writes of ``path`` killed mid-way left behind (safe to delete)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


def write_text(path: str | os.PathLike, text: str) -> str:
    """Write UTF-8 ``text`` atomically; returns the path.

    >>> import os, tempfile
    >>> p = write_text(os.path.join(tempfile.mkdtemp(), "a", "note.txt"), "kept")
    >>> open(p, encoding="utf-8").read()
    'kept'
    """
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))


def save_tensors(path: str | os.PathLike, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` and JSON ``meta`` to ``path`` atomically: a crash leaves no half file."""
    data = safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                             metadata={"json": json.dumps(meta)})
    return Path(atomic_write(path, lambda f: f.write(data)))


def load_tensors(
    path: str | os.PathLike, what: str = "a captum_entropy file"
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Inverse of :func:`save_tensors`: the tensors and the JSON metadata (a dict).

    Only safetensors and JSON are parsed (no pickle, nothing executed); a file that is not a
    complete safetensors file with a JSON object as metadata is a ``ValueError`` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("json")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own SafetensorError (an Exception) for bad files
        raise ValueError(
            f"cannot read {path} as {what}: it is not a complete safetensors file ({err}); it was cut short, "
            "corrupted or is another kind of file: write it again with .save()"
        ) from None
    try:
        meta = json.loads(raw) if raw is not None else {}
    except json.JSONDecodeError as err:
        raise ValueError(
            f"cannot read {path} as {what}: its metadata is not valid JSON ({err}); the file was edited or not "
            "written by captum_entropy: write it again with .save()"
        ) from None
    if not isinstance(meta, dict):
        raise ValueError(
            f"cannot read {path} as {what}: its JSON metadata is a {type(meta).__name__}, not an object; "
            "write it again with .save()"
        )
    return tensors, meta


def bad_file(path: str | os.PathLike, what: str, problem: str) -> ValueError:
    """The error for a readable safetensors file that is not ``what``."""
    return ValueError(
        f"{path} is not {what}: {problem}; write it again with .save() (and load it with the matching class)"
    )
