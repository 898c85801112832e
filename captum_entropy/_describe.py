"""A user's argument named in an error message: short, a tensor by its shape and dtype."""

from __future__ import annotations

from typing import Any

from torch import Tensor


def short(obj: Any) -> str:
    """``obj`` in at most 80 characters; a tensor by its shape and dtype, never its values."""
    if isinstance(obj, Tensor):
        return f"tensor of shape {tuple(obj.shape)} and dtype {str(obj.dtype).removeprefix('torch.')}"
    text = repr(obj)
    return text if len(text) <= 80 else text[:77] + "..."
