"""Training and evaluation loops for the zoo's classifiers (seeded, with a progress bar)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

Tokenize = Callable[[Sequence[str]], tuple[Tensor, Tensor]]
Forward = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one zoo model."""

    epochs: int = 6
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.0
    seed: int = 0


def _batches(n: int, size: int, rng: random.Random | None) -> list[list[int]]:
    order = list(range(n))
    if rng is not None:
        rng.shuffle(order)
    return [order[i : i + size] for i in range(0, n, size)]


def fit(
    model: nn.Module, forward: Forward, tokenize: Tokenize, texts: Sequence[str], labels: Sequence[int],
    cfg: TrainConfig, progress: bool = True,
) -> list[float]:
    """Train ``model`` with AdamW and cross-entropy; returns the mean loss of each epoch."""
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    y_all = torch.tensor(list(labels))
    losses = []
    model.train()
    try:
        for epoch in range(cfg.epochs):
            batches = _batches(len(texts), cfg.batch_size, rng)
            total = 0.0
            for idx in tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False):
                ids, mask = tokenize([texts[i] for i in idx])
                loss = nn.functional.cross_entropy(forward(ids, mask), y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            losses.append(total / len(texts))
    finally:
        opt.zero_grad(set_to_none=True)
        model.eval()
    return losses


@torch.no_grad()
def accuracy(forward: Forward, tokenize: Tokenize, texts: Sequence[str], labels: Sequence[int], batch_size: int = 64) -> float:
    """Share of ``texts`` whose arg-max logit is the label."""
    right = 0
    for idx in _batches(len(texts), batch_size, None):
        ids, mask = tokenize([texts[i] for i in idx])
        right += int((forward(ids, mask).argmax(-1) == torch.tensor([labels[i] for i in idx])).sum())
    return right / max(len(texts), 1)
