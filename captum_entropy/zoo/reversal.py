"""The reversal task of Guan et al. (ICML 2019): data, two models, training, checkpoints.

Output ``t`` of a length-``n`` sequence is input ``n−1−t``, so the right attribution is known
(``benchmarks/reverse_task.py`` scores methods against it, :mod:`captum_entropy.evaluate.ground_truth`).
:func:`make_batch` draws seeded sequences; :class:`ReverseLSTM` (encoder–decoder, no attention)
and :class:`ReverseTransformer` (encoder only) are trained by :func:`train_reversal` through the
zoo's loop (:func:`~captum_entropy.zoo.training.optimize`) and saved in the zoo's checkpoint format
(:func:`save_reversal` / :func:`load_reversal`: safetensors + JSON, never pickle). Token ids:
``PAD = 0``, ``BOS = 1`` (the LSTM decoder's start), symbols ``2 … n_symbols+1``; right-padded.
One idea, the reversal task, in one module (so over ~400 lines): its sequences, its two models,
their training and their checkpoints belong together.

>>> b = make_batch(3, TaskConfig(n_symbols=5, min_len=2, max_len=4), seed=0)
>>> bool((b.tgt[0, : b.lengths[0]] == b.src[0, : b.lengths[0]].flip(0)).all())
True
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from .registry import read_checkpoint, write_checkpoint
from .training import optimize

PAD = 0
BOS = 1
FIRST_SYMBOL = 2

# -- data ------------------------------------------------------------------------------------


def _positive_ints(cfg: Any, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if not (isinstance(v, int) and v >= 1):
            raise ValueError(f"{name} must be a positive int, got {v!r}")


@dataclass(frozen=True)
class TaskConfig:
    """The reversal task: ``n_symbols`` distinct tokens, lengths ``min_len … max_len``.

    >>> TaskConfig(n_symbols=20).vocab_size      # + PAD and BOS
    22
    """

    n_symbols: int = 20
    min_len: int = 5
    max_len: int = 10

    def __post_init__(self) -> None:
        if not (isinstance(self.n_symbols, int) and self.n_symbols >= 2):
            raise ValueError(f"n_symbols must be an int >= 2, got {self.n_symbols!r}")
        lo, hi = self.min_len, self.max_len
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
            raise ValueError(f"need integers 1 <= min_len <= max_len, got min_len={lo!r}, max_len={hi!r}")

    @property
    def vocab_size(self) -> int:
        """Embedding rows: the symbols plus PAD and BOS."""
        return self.n_symbols + FIRST_SYMBOL


@dataclass
class Batch:
    """Sequences and their reversal, right-padded with ``PAD`` to the task's ``max_len``.

    Attributes:
        src: (B, L) input token ids.
        tgt: (B, L) target ids: ``tgt[b, t] = src[b, n_b − 1 − t]`` for ``t < n_b``.
        lengths: (B,) the true lengths ``n_b`` (int64, on the CPU).
    """

    src: Tensor
    tgt: Tensor
    lengths: Tensor

    @property
    def mask(self) -> Tensor:
        """(B, L) bool, True on real tokens."""
        return torch.arange(self.src.shape[1])[None, :] < self.lengths[:, None]

    def __len__(self) -> int:
        return self.src.shape[0]

    def select(self, rows: Tensor | Sequence[int]) -> "Batch":
        """The sub-batch of ``rows``."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        return Batch(self.src[rows], self.tgt[rows], self.lengths[rows])


def reverse_padded(src: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row's first ``lengths[b]`` tokens, keep the padding in place.

    >>> reverse_padded(torch.tensor([[2, 3, 4, 0]]), torch.tensor([3]))
    tensor([[4, 3, 2, 0]])
    """
    pos = torch.arange(src.shape[1])[None, :]
    lengths = lengths.to(torch.long)[:, None]
    idx = torch.where(pos < lengths, lengths - 1 - pos, pos)
    return src.gather(1, idx)


def make_batch(n: int, task: TaskConfig, seed: int | None = None, generator: torch.Generator | None = None) -> Batch:
    """``n`` random sequences (lengths uniform in ``[min_len, max_len]``) and their reversal.

    Pass ``seed`` (same seed, same batch) or a ``generator`` (a stream of fresh batches).

    >>> b = make_batch(2, TaskConfig(n_symbols=5, min_len=3, max_len=3), seed=1)
    >>> b.src.shape, b.lengths.tolist()
    (torch.Size([2, 3]), [3, 3])
    """
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n must be a positive int, got {n!r}")
    if (seed is None) == (generator is None):
        raise ValueError("pass exactly one of seed or generator")
    g = generator if generator is not None else torch.Generator().manual_seed(int(seed))
    lengths = torch.randint(task.min_len, task.max_len + 1, (n,), generator=g)
    src = torch.randint(FIRST_SYMBOL, task.vocab_size, (n, task.max_len), generator=g)
    src = src.masked_fill(torch.arange(task.max_len)[None, :] >= lengths[:, None], PAD)
    return Batch(src, reverse_padded(src, lengths), lengths)


# -- models ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of either model. ``kind``: ``"lstm"`` or ``"transformer"``.

    ``dim`` is the embedding width (the noised layer), ``hidden`` the LSTM state size or the
    Transformer's feed-forward width; ``layers`` and ``heads`` apply to the Transformer.
    """

    kind: str
    dim: int = 64
    hidden: int = 256
    layers: int = 2
    heads: int = 4

    def __post_init__(self) -> None:
        if self.kind not in ("lstm", "transformer"):
            raise ValueError(f"kind must be 'lstm' or 'transformer', got {self.kind!r}")
        _positive_ints(self, "dim", "hidden", "layers", "heads")
        if self.kind == "transformer" and self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")


StepForward = Callable[..., Tensor]


@dataclass
class Step:
    """One explained feature: the logits of output step ``t`` (or a hidden state at ``t``).

    ``forward(src, *extra)`` and ``forward_embedded(embedded_src, *extra)`` return (B, C);
    ``target`` (B,) selects the explained element (Captum target semantics), ``None``: the
    whole vector.
    """

    forward: StepForward
    forward_embedded: StepForward
    extra: tuple[Tensor, ...]
    target: Tensor | None


class ReverseLSTM(nn.Module):
    """LSTM encoder–decoder without attention.

    The encoder reads the source (``embedding``: the noised module); its final (h, c) starts
    the decoder, which reads ``BOS``, then the previous outputs (``decoder_embedding``), for
    exactly ``n`` steps (no end token). Training is teacher-forced, :meth:`predict` greedy.

    >>> m = ReverseLSTM(TaskConfig(n_symbols=5, min_len=2, max_len=4), ModelConfig("lstm", dim=8, hidden=16))
    >>> b = make_batch(2, m.task, seed=0)
    >>> m(b.src, b.lengths, m.decoder_inputs(b.tgt)).shape
    torch.Size([2, 4, 7])
    """

    def __init__(self, task: TaskConfig, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.kind != "lstm":
            raise ValueError(f"ReverseLSTM needs a ModelConfig of kind 'lstm', got {cfg.kind!r}")
        self.task, self.cfg = task, cfg
        self.embedding = nn.Embedding(task.vocab_size, cfg.dim, padding_idx=PAD)
        self.encoder = nn.LSTM(cfg.dim, cfg.hidden, batch_first=True)
        self.decoder_embedding = nn.Embedding(task.vocab_size, cfg.dim, padding_idx=PAD)
        self.decoder = nn.LSTM(cfg.dim, cfg.hidden, batch_first=True)
        self.head = nn.Linear(cfg.hidden, task.vocab_size)

    @staticmethod
    def decoder_inputs(prefix: Tensor) -> Tensor:
        """Teacher-forcing inputs: ``BOS`` followed by ``prefix`` shifted right by one."""
        bos = torch.full_like(prefix[:, :1], BOS)
        return torch.cat([bos, prefix[:, :-1]], dim=1)

    def forward(self, src: Tensor, lengths: Tensor, dec_in: Tensor) -> Tensor:
        """(B, S, V) logits of every decoder step given the decoder inputs ``dec_in`` (B, S)."""
        return self.forward_embedded(self.embedding(src), lengths, dec_in)

    def encode(self, src_emb: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder's final (h, c) after each sequence's last real token (padding skipped)."""
        packed = pack_padded_sequence(src_emb, lengths.cpu().to(torch.long), batch_first=True, enforce_sorted=False)
        return self.encoder(packed)[1]

    def forward_embedded(self, src_emb: Tensor, lengths: Tensor, dec_in: Tensor) -> Tensor:
        """:meth:`forward` from the encoder's embedded source (B, L, dim)."""
        out, _ = self.decoder(self.decoder_embedding(dec_in), self.encode(src_emb, lengths))
        return self.head(out)

    @torch.no_grad()
    def predict(self, src: Tensor, lengths: Tensor) -> Tensor:
        """Greedy decoding of ``max(lengths)`` steps; (B, L) ids, ``PAD`` beyond each length."""
        state = self.encode(self.embedding(src), lengths)
        tok = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
        outs = []
        for _ in range(int(lengths.max())):
            out, state = self.decoder(self.decoder_embedding(tok), state)
            tok = self.head(out).argmax(-1)
            outs.append(tok)
        pred = nn.functional.pad(torch.cat(outs, 1), (0, src.shape[1] - len(outs)), value=PAD)
        beyond = torch.arange(src.shape[1], device=src.device)[None, :] >= lengths[:, None].to(src.device)
        return pred.masked_fill(beyond, PAD)

    def step(self, batch: Batch, t: int, emitted: Tensor) -> Step:
        """Explained feature: the logits of decoder step ``t``, given the model's own greedy
        prefix ``emitted[:, :t]`` (held fixed; only the encoder's source gets noise)."""
        dec_in = self.decoder_inputs(emitted[:, : t + 1])
        return Step(
            forward=lambda src, lengths, dec: self(src, lengths, dec)[:, t],
            forward_embedded=lambda emb, lengths, dec: self.forward_embedded(emb, lengths, dec)[:, t],
            extra=(batch.lengths, dec_in),
            target=emitted[:, t],
        )

    def all_logits(self, batch: Batch, emitted: Tensor) -> Tensor:
        """(B, L, V) logits of every step given the emitted prefix (for σ_S, the features' std)."""
        return self(batch.src, batch.lengths, self.decoder_inputs(emitted))


class ReverseTransformer(nn.Module):
    """Encoder-only Transformer that emits, at position ``t``, the token at ``n−1−t``.

    ``embedding`` is the token embedding alone (the noised module); learned position
    embeddings are added after it, inside :meth:`forward_embedded`. So noise hides *which
    token* sits at a position, never *where* it is. Pre-norm encoder layers (``layers``, an
    ``nn.ModuleList`` of ``nn.TransformerEncoderLayer``, no dropout), a padding mask, a final
    LayerNorm and a linear head at every position.

    >>> cfg = ModelConfig("transformer", dim=8, hidden=16, heads=2)
    >>> m = ReverseTransformer(TaskConfig(n_symbols=5, min_len=2, max_len=4), cfg)
    >>> b = make_batch(2, m.task, seed=0)
    >>> m(b.src, b.mask).shape, len(m.layers)
    (torch.Size([2, 4, 7]), 2)
    """

    def __init__(self, task: TaskConfig, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.kind != "transformer":
            raise ValueError(f"ReverseTransformer needs a ModelConfig of kind 'transformer', got {cfg.kind!r}")
        self.task, self.cfg = task, cfg
        self.embedding = nn.Embedding(task.vocab_size, cfg.dim, padding_idx=PAD)
        self.position = nn.Embedding(task.max_len, cfg.dim)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(cfg.dim, cfg.heads, cfg.hidden, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(cfg.layers)
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, task.vocab_size)

    def forward(self, src: Tensor, mask: Tensor) -> Tensor:
        """(B, L, V) logits at every position; ``mask`` (B, L) is True on real tokens."""
        return self.forward_embedded(self.embedding(src), mask)

    def forward_embedded(self, tok_emb: Tensor, mask: Tensor, n_layers: int | None = None) -> Tensor:
        """Logits from the token embeddings (B, L, dim); with ``n_layers`` the hidden states
        after that many encoder layers instead (before the final norm)."""
        if n_layers is not None and not (isinstance(n_layers, int) and 0 <= n_layers <= len(self.layers)):
            raise ValueError(f"n_layers must be an int in [0, {len(self.layers)}], got {n_layers!r}")
        h = tok_emb + self.position.weight[: tok_emb.shape[1]]
        pad = ~mask.bool()
        for layer in self.layers[: n_layers if n_layers is not None else len(self.layers)]:
            h = layer(h, src_key_padding_mask=pad)
        return h if n_layers is not None else self.head(self.norm(h))

    def hidden(self, src: Tensor, mask: Tensor, n_layers: int) -> Tensor:
        """(B, L, dim) hidden states after ``n_layers`` encoder layers."""
        return self.forward_embedded(self.embedding(src), mask, n_layers)

    @torch.no_grad()
    def predict(self, src: Tensor, lengths: Tensor) -> Tensor:
        """Arg-max token at every position; (B, L) ids, ``PAD`` beyond each length."""
        mask = torch.arange(src.shape[1])[None, :] < lengths[:, None]
        return self(src, mask).argmax(-1).masked_fill(~mask, PAD)

    def step(self, batch: Batch, t: int, emitted: Tensor, layer: int | None = None) -> Step:
        """Explained feature: the logits at position ``t`` (target: the emitted token), or,
        with ``layer`` = l, the hidden vector at ``t`` after ``l`` encoder layers (no target)."""
        return Step(
            forward=lambda src, mask: self.forward_embedded(self.embedding(src), mask, layer)[:, t],
            forward_embedded=lambda emb, mask: self.forward_embedded(emb, mask, layer)[:, t],
            extra=(batch.mask,), target=emitted[:, t] if layer is None else None,
        )

    def all_logits(self, batch: Batch, emitted: Tensor) -> Tensor:
        """(B, L, V) logits at every position (for σ_S, the features' std)."""
        return self(batch.src, batch.mask)


ReverseModel = Union[ReverseLSTM, ReverseTransformer]


def build_model(task: TaskConfig, cfg: ModelConfig, seed: int = 0) -> ReverseModel:
    """A freshly initialised model of ``cfg.kind`` (weights seeded by ``seed``)."""
    torch.manual_seed(seed)
    model = ReverseLSTM(task, cfg) if cfg.kind == "lstm" else ReverseTransformer(task, cfg)
    return model.eval()


# -- training and checkpoints (the zoo's loop and format) ------------------------------------

CHECKPOINT_NAME = "reversal"


@dataclass(frozen=True)
class ReversalTrainConfig:
    """Optimisation settings. Every batch is freshly generated from ``seed``; the held-out
    set (``eval_size`` sequences) comes from ``eval_seed``, a separate stream."""

    steps: int = 3000
    batch_size: int = 128
    lr: float = 3e-3
    seed: int = 0
    eval_size: int = 2000
    eval_seed: int = 10_000

    def __post_init__(self) -> None:
        _positive_ints(self, "steps", "batch_size", "eval_size")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr!r}")


@torch.no_grad()
def exact_match(model: nn.Module, batch: Batch) -> float:
    """Share of sequences whose whole prediction (greedy) equals the reversal."""
    was = model.training
    try:
        pred = model.eval().predict(batch.src, batch.lengths)
    finally:
        model.train(was)
    return float(((pred == batch.tgt) | ~batch.mask).all(1).float().mean())


def reversal_loss(model: ReverseModel, batch: Batch) -> Tensor:
    """Cross-entropy over the real positions (the LSTM decoder teacher-forced)."""
    if isinstance(model, ReverseLSTM):
        logits = model(batch.src, batch.lengths, model.decoder_inputs(batch.tgt))
    else:
        logits = model(batch.src, batch.mask)
    return nn.functional.cross_entropy(logits[batch.mask], batch.tgt[batch.mask])


@dataclass
class TrainReport:
    """What :func:`train_reversal` measured: held-out exact match, loss curve, wall time."""

    accuracy: float
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train_reversal(model: ReverseModel, cfg: ReversalTrainConfig = ReversalTrainConfig(),
                   progress: bool = True) -> TrainReport:
    """Train with the zoo's AdamW loop (no weight decay, lr decayed by a half cosine, gradient
    norm clipped at 1) on ``cfg.steps`` fresh random batches; returns the exact match on
    ``cfg.eval_size`` held-out sequences. The model is left in eval mode."""
    if not isinstance(model, (ReverseLSTM, ReverseTransformer)):
        raise TypeError(f"train_reversal needs a ReverseLSTM or ReverseTransformer, got {type(model).__name__}")
    gen = torch.Generator().manual_seed(cfg.seed)
    start = time.perf_counter()
    log = optimize(
        model, lambda b: reversal_loss(model, b),
        lambda epoch: (make_batch(cfg.batch_size, model.task, generator=gen) for _ in range(cfg.steps)),
        lr=cfg.lr, seed=cfg.seed, clip_norm=1.0, total=cfg.steps, desc=f"train {model.cfg.kind}", progress=progress,
        lr_lambda=lambda s: 0.5 * (1 + math.cos(math.pi * min(s / cfg.steps, 1.0))),
    )
    acc = exact_match(model, make_batch(cfg.eval_size, model.task, seed=cfg.eval_seed))
    return TrainReport(acc, log.steps, time.perf_counter() - start)


def save_reversal(path: str | os.PathLike, model: ReverseModel, train_cfg: ReversalTrainConfig,
                  report: TrainReport) -> Path:
    """Write a zoo checkpoint: the weights, and the task, model and training configs, the
    held-out accuracy, training time and final loss (mean of the last 100 steps) as metadata."""
    last = report.losses[-100:]
    meta = {"task": asdict(model.task), "model": asdict(model.cfg), "train": asdict(train_cfg),
            "accuracy": report.accuracy, "train_seconds": report.seconds,
            "final_loss": sum(last) / len(last) if last else None}
    return write_checkpoint(path, CHECKPOINT_NAME, model, meta)


def load_reversal(path: str | os.PathLike) -> tuple[ReverseModel, dict[str, Any]]:
    """Rebuild the model :func:`save_reversal` wrote: ``(model in eval mode, metadata)``."""
    fix = "delete it and train again (train_reversal, then save_reversal)"
    tensors, meta = read_checkpoint(path, "reverse-task", fix)
    if meta.get("name", CHECKPOINT_NAME) != CHECKPOINT_NAME or "task" not in meta or "model" not in meta:
        raise ValueError(f"{path} is not a reverse-task checkpoint (no task/model config in its metadata): {fix}")
    model = build_model(TaskConfig(**meta["task"]), ModelConfig(**meta["model"]))
    model.load_state_dict(tensors)
    return model.eval(), meta
