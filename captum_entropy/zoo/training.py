"""Training and evaluation loops of the zoo (seeded, with a progress bar).

:func:`optimize` is the one AdamW loop: the classifiers' :func:`fit` (epochs over shuffled
sentences) and the reversal task's trainer (:func:`~captum_entropy.zoo.reversal.train_reversal`,
fresh random batches, a cosine schedule and gradient clipping) both run through it.

>>> model = nn.Linear(1, 1, bias=False)
>>> _ = nn.init.zeros_(model.weight)
>>> xs = [torch.tensor([[1.0], [2.0]])] * 50                     # learn y = 3x
>>> log = optimize(model, lambda x: (model(x) - 3 * x).pow(2).mean(), lambda epoch: xs, epochs=4, lr=0.1,
...                progress=False)
>>> len(log.steps), len(log.epochs), round(model.weight.item(), 2), model.training
(200, 4, 3.0, False)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence, Sized, TypeVar

import torch
from torch import Tensor, nn

Tokenize = Callable[[Sequence[str]], tuple[Tensor, Tensor]]
Forward = Callable[[Tensor, Tensor], Tensor]
B = TypeVar("B", bound=Sized)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one zoo model."""

    epochs: int = 6
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.0
    seed: int = 0


@dataclass
class TrainLog:
    """What :func:`optimize` saw: every step's loss, and each epoch's mean weighted by batch size."""

    steps: list[float] = field(default_factory=list)
    epochs: list[float] = field(default_factory=list)


def optimize(
    model: nn.Module,
    loss: Callable[[B], Tensor],
    batches: Callable[[int], Iterable[B]],
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    clip_norm: float | None = None,
    lr_lambda: Callable[[int], float] | None = None,
    desc: str = "epoch {epoch}/{epochs}",
    total: int | None = None,
    progress: bool = True,
) -> TrainLog:
    """Minimise ``loss(batch)`` with AdamW over ``batches(epoch)`` for each of ``epochs``.

    ``torch.manual_seed(seed)`` first; only parameters with ``requires_grad`` are trained;
    ``clip_norm`` clips the gradient norm, ``lr_lambda(step)`` scales ``lr`` (``LambdaLR``).
    ``desc`` is formatted with ``epoch`` and ``epochs`` for each epoch's progress bar (``total``:
    its length when the batches have no ``len``); its ``loss=`` is the mean of the last 100 steps,
    updated every step. The model trains in train mode and is left in
    eval mode, with no gradients held, also when a step raises.
    """
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda) if lr_lambda is not None else None
    log = TrainLog()
    model.train()
    try:
        for epoch in range(epochs):
            bar = tqdm(batches(epoch), desc=desc.format(epoch=epoch + 1, epochs=epochs), total=total,
                       disable=not progress, leave=False)
            weighted, count = 0.0, 0
            for batch in bar:
                value = loss(batch)
                opt.zero_grad(set_to_none=True)
                value.backward()
                if clip_norm is not None:
                    nn.utils.clip_grad_norm_(params, clip_norm)
                opt.step()
                if sched is not None:
                    sched.step()
                log.steps.append(float(value.detach()))
                weighted += log.steps[-1] * len(batch)
                count += len(batch)
                recent = log.steps[-100:]  # every step; tqdm redraws at its own pace
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", refresh=False)
            log.epochs.append(weighted / max(count, 1))
    finally:
        opt.zero_grad(set_to_none=True)
        model.eval()
    return log


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
    rng = random.Random(cfg.seed)
    y_all = torch.tensor(list(labels))

    def loss(idx: list[int]) -> Tensor:
        ids, mask = tokenize([texts[i] for i in idx])
        return nn.functional.cross_entropy(forward(ids, mask), y_all[idx])

    return optimize(model, loss, lambda epoch: _batches(len(texts), cfg.batch_size, rng), epochs=cfg.epochs,
                    lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed, progress=progress).epochs


@torch.no_grad()
def accuracy(forward: Forward, tokenize: Tokenize, texts: Sequence[str], labels: Sequence[int], batch_size: int = 64) -> float:
    """Share of ``texts`` whose arg-max logit is the label."""
    right = 0
    for idx in _batches(len(texts), batch_size, None):
        ids, mask = tokenize([texts[i] for i in idx])
        right += int((forward(ids, mask).argmax(-1) == torch.tensor([labels[i] for i in idx])).sum())
    return right / max(len(texts), 1)
