"""The processes of a run: this one's rank and device under ``torchrun`` (or rank 0 of 1), and
what rank 0 decides shared with every rank."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import torch


@dataclass(frozen=True)
class Rank:
    """This process's place in a run: ``rank`` of ``world_size``; ``device`` its accelerator (or cpu)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")


def rank_device(device: str = "auto") -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` for ``"cuda"`` (or ``"auto"`` with a GPU), else the CPU."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA device; use device='cpu'")
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}") if cuda else torch.device("cpu")


@contextmanager
def distributed(device: str = "auto", timeout: timedelta = timedelta(hours=24)) -> Iterator[Rank]:
    """This process's :class:`Rank`. Under ``torchrun`` (``WORLD_SIZE`` > 1) it joins the process
    group (NCCL on CUDA, gloo on CPU) and leaves it at the end; otherwise rank 0 of 1.

    ``device``: ``"auto"`` (this rank's GPU, ``cuda:LOCAL_RANK``, when there is one, else the
    CPU), ``"cpu"`` or ``"cuda"``."""
    dev = rank_device(device)
    cuda = dev.type == "cuda"
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield Rank(0, 1, dev)
        return
    import torch.distributed as dist

    own = not dist.is_initialized()
    if own:
        if cuda:
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timeout)
    try:
        yield Rank(dist.get_rank(), dist.get_world_size(), dev)
    finally:
        if own:
            dist.destroy_process_group()


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _same_everywhere(identity: dict) -> None:
    """Every rank must explain the same thing (model weights, σ_S, settings, sentences)."""
    dist = _dist()
    if dist is None:
        return
    every: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(every, identity)
    differ = sorted({k for other in every for k in identity if other.get(k) != identity[k]})
    if differ:
        raise ValueError(f"the processes of this run disagree on {', '.join(differ)}: give every rank the same "
                         "model, σ_S, settings and sentences")


def _agree(rank: int, check) -> Any:
    """Run ``check()`` on rank 0 and give every rank its value (or its ValueError, raised on every rank)."""
    dist = _dist()
    value, error = None, None
    if rank == 0:
        try:
            value = check()
        except Exception as err:  # every rank must hear of it, or the others wait for the plan forever
            error = f"{err}" if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
    if dist is not None:
        box = [(value, error)]
        dist.broadcast_object_list(box, src=0)
        value, error = box[0]
    if error is not None:
        raise ValueError(error)
    return value
