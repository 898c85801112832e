"""Atomic writes of tensors + JSON metadata with safetensors (never pickle)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import save_file, safe_open
from torch import Tensor


def save_tensors(path: str | os.PathLike, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` and JSON ``meta`` to ``path`` atomically: a crash leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata={"json": json.dumps(meta)})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
