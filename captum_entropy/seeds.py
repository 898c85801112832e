"""Each sentence's seed: from the run's seed and the sentence's own content, never its position."""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor


def sentence_seeds(args: tuple[Tensor, ...], mask: Tensor, seed: int) -> list[int]:
    """One seed per sentence from the run's seed and the sentence's own content (not its position)."""
    seeds = []
    for b in range(mask.shape[0]):
        h = hashlib.blake2b(str(int(seed)).encode(), digest_size=8)
        for a in args:
            row = a[b]
            if row.dim() >= 1 and row.shape[0] == mask.shape[1]:
                row = row[mask[b].to(row.device)]
            h.update(row.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        seeds.append(int.from_bytes(h.digest(), "little") & ((1 << 63) - 1))
    return seeds
