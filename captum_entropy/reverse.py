"""The paper's synthetic task, where the right answer is known: reversing a sequence.

Guan et al. (ICML 2019) check their measure on a network that reverses its input. Output
position ``t`` of a sequence of length ``n`` is the input token at ``n−1−t``, so a good
attribution for output ``t`` should single out input ``n−1−t``. This module makes that a
quantitative benchmark:

* :func:`make_batch`: seeded random sequences of varying length and their reversal.
* :class:`ReverseLSTM` (encoder–decoder, no attention) and :class:`ReverseTransformer`
  (encoder only, 2 layers), trained in minutes on a CPU by :func:`train_model`; checkpoints
  are safetensors files (:func:`save_checkpoint`, :func:`load_checkpoint`), never pickle.
* :func:`jacobian_norms` / :func:`truth_sets` / :func:`counterfactual_reads`: what each output
  provably reads, measured (Jacobians, token swaps) instead of assumed.
* :func:`source_rank`, :func:`set_hit`, :func:`mass_share`, :func:`log_spread`,
  :func:`bootstrap_ci`: scores of an attribution matrix (timestamps × input positions).
* :func:`run_experiment` / :func:`summarize`: EntropyAttribution next to Captum's Saliency,
  InputXGradient and LayerIntegratedGradients on the same feature and embedding layer.

Conventions. Token ids: ``PAD = 0``, ``BOS = 1`` (the LSTM decoder's start token), symbols
``2 … n_symbols+1``. Sequences are right-padded to ``max_len``. Score arrays are
``(N sequences, T output steps, P input positions)``, higher = more important, NaN where the
step or the position does not exist.

>>> task = TaskConfig(n_symbols=5, min_len=2, max_len=4)
>>> b = make_batch(3, task, seed=0)
>>> bool((b.tgt[0, : b.lengths[0]] == b.src[0, : b.lengths[0]].flip(0)).all())
True
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from ._io import load_tensors, save_tensors

PAD = 0
BOS = 1
FIRST_SYMBOL = 2

# ---------------------------------------------------------------------------------------------
# data


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
        if not (isinstance(self.min_len, int) and isinstance(self.max_len, int) and 1 <= self.min_len <= self.max_len):
            raise ValueError(
                f"need integers 1 <= min_len <= max_len, got min_len={self.min_len!r}, max_len={self.max_len!r}"
            )

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


# ---------------------------------------------------------------------------------------------
# models


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
        for name in ("dim", "hidden", "layers", "heads"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{name} must be a positive int, got {v!r}")
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
    the decoder, which reads ``BOS`` and then the previous output tokens through its own
    ``decoder_embedding``. The decoder runs exactly ``n`` steps (the length is given), so no
    end token is needed. Training uses teacher forcing, :meth:`predict` greedy decoding.

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
        pred = torch.cat(outs, 1)
        pred = torch.nn.functional.pad(pred, (0, src.shape[1] - pred.shape[1]), value=PAD)
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
        """(B, L, V) logits of every step given the emitted prefix (for feature statistics)."""
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
        if layer is None:
            return Step(
                forward=lambda src, mask: self(src, mask)[:, t],
                forward_embedded=lambda emb, mask: self.forward_embedded(emb, mask)[:, t],
                extra=(batch.mask,), target=emitted[:, t],
            )
        return Step(
            forward=lambda src, mask: self.hidden(src, mask, layer)[:, t],
            forward_embedded=lambda emb, mask: self.forward_embedded(emb, mask, layer)[:, t],
            extra=(batch.mask,), target=None,
        )

    def all_logits(self, batch: Batch, emitted: Tensor) -> Tensor:
        """(B, L, V) logits at every position (for feature statistics)."""
        return self(batch.src, batch.mask)


ReverseModel = Union[ReverseLSTM, ReverseTransformer]


def build_model(task: TaskConfig, cfg: ModelConfig, seed: int = 0) -> ReverseModel:
    """A freshly initialised model of ``cfg.kind`` (weights seeded by ``seed``)."""
    torch.manual_seed(seed)
    model = ReverseLSTM(task, cfg) if cfg.kind == "lstm" else ReverseTransformer(task, cfg)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# training and checkpoints


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Every batch is freshly generated from ``seed``; the held-out
    set (``eval_size`` sequences) comes from ``eval_seed``, a separate stream."""

    steps: int = 3000
    batch_size: int = 128
    lr: float = 3e-3
    seed: int = 0
    eval_size: int = 2000
    eval_seed: int = 10_000

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_size"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr!r}")


@torch.no_grad()
def exact_match(model: nn.Module, batch: Batch) -> float:
    """Share of sequences whose whole prediction (greedy) equals the reversal."""
    was = model.training
    model.eval()
    try:
        pred = model.predict(batch.src, batch.lengths)
    finally:
        model.train(was)
    return float(((pred == batch.tgt) | ~batch.mask).all(1).float().mean())


def _loss(model: nn.Module, batch: Batch) -> Tensor:
    if isinstance(model, ReverseLSTM):
        logits = model(batch.src, batch.lengths, model.decoder_inputs(batch.tgt))
    else:
        logits = model(batch.src, batch.mask)
    mask = batch.mask
    return nn.functional.cross_entropy(logits[mask], batch.tgt[mask])


@dataclass
class TrainReport:
    """What :func:`train_model` measured: held-out exact match, loss curve, wall time."""

    accuracy: float
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train_model(model: nn.Module, cfg: TrainConfig = TrainConfig(), progress: bool = True) -> TrainReport:
    """Train with Adam (cosine-decayed lr, gradient clipping at 1) on fresh random batches.

    Returns the exact-match accuracy on ``cfg.eval_size`` held-out sequences. The model is
    left in eval mode.
    """
    from tqdm.auto import tqdm

    if not isinstance(model, (ReverseLSTM, ReverseTransformer)):
        raise TypeError(f"train_model needs a ReverseLSTM or ReverseTransformer, got {type(model).__name__}")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / cfg.steps, 1.0))))
    losses: list[float] = []
    start = time.perf_counter()
    model.train()
    try:
        bar = tqdm(range(cfg.steps), desc=f"train {model.cfg.kind}", disable=not progress, leave=False)
        for step in bar:
            loss = _loss(model, make_batch(cfg.batch_size, model.task, generator=gen))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            if step % 100 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-100:]):.4f}")
    finally:
        opt.zero_grad(set_to_none=True)
        model.eval()
    acc = exact_match(model, make_batch(cfg.eval_size, model.task, seed=cfg.eval_seed))
    return TrainReport(acc, losses, time.perf_counter() - start)


def save_checkpoint(path: str | Path, model: nn.Module, train_cfg: TrainConfig, report: TrainReport) -> Path:
    """Weights as safetensors; task, model and training configs and the accuracy in the metadata."""
    meta = {
        "task": asdict(model.task), "model": asdict(model.cfg), "train": asdict(train_cfg),
        "accuracy": report.accuracy, "train_seconds": report.seconds,
        "final_loss": float(np.mean(report.losses[-100:])) if report.losses else None,
    }
    return save_tensors(path, dict(model.state_dict()), meta)


def load_checkpoint(path: str | Path) -> tuple[ReverseModel, dict[str, Any]]:
    """Rebuild the model :func:`save_checkpoint` wrote; returns ``(model in eval mode, metadata)``."""
    tensors, meta = load_tensors(path)
    if "task" not in meta or "model" not in meta:
        raise ValueError(f"{path} is not a reverse-task checkpoint (no task/model config in its metadata)")
    model = build_model(TaskConfig(**meta["task"]), ModelConfig(**meta["model"]))
    model.load_state_dict(tensors)
    return model.eval(), meta


# ---------------------------------------------------------------------------------------------
# ground truth: what each output provably reads


def jacobian_norms(
    forward_embedded: StepForward, embedded: Tensor, extra: Sequence[Any] = (), target: Tensor | None = None,
    scale: Tensor | None = None,
) -> Tensor:
    """(B, P): ``‖∂f/∂x_i‖``, the Jacobian norm of the feature w.r.t. each position's embedding.

    ``f = forward_embedded(embedded, *extra)`` is (B, C); with ``target`` (B,) only the
    element ``f[b, target[b]]`` (the emitted token's logit; ``scale`` is then ignored: one
    element's scale does not change the shares), else all C elements, each divided by
    ``scale`` (C,) if given (Frobenius norm over the C elements and the embedding width).
    Exact: one backward pass per feature element. Rows must not interact (no batch norm).

    >>> w = torch.tensor([1.0, 2.0])
    >>> f = lambda x: (x[:, 0] @ w + 3 * x[:, 2] @ w)[:, None]          # reads positions 0 and 2
    >>> jacobian_norms(f, torch.zeros(1, 3, 2), target=torch.tensor([0])) / 5 ** 0.5
    tensor([[1., 0., 3.]])
    """
    emb = embedded.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = forward_embedded(emb, *extra)
        if out.dim() != 2 or out.shape[0] != emb.shape[0]:
            raise ValueError(f"forward_embedded must return (batch, features), got shape {tuple(out.shape)}")
        if target is not None:
            out = out.gather(1, torch.as_tensor(target, device=out.device).reshape(-1, 1))
        elif scale is not None:
            out = out / torch.as_tensor(scale, dtype=out.dtype, device=out.device)
        sq = torch.zeros(emb.shape[:2], dtype=emb.dtype, device=emb.device)
        for c in range(out.shape[1]):
            (g,) = torch.autograd.grad(out[:, c].sum(), emb, retain_graph=c + 1 < out.shape[1])
            sq += g.pow(2).flatten(2).sum(-1)
    return sq.sqrt().detach()


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def _valid(lengths: np.ndarray, n_steps: int, n_pos: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, T) valid steps and (N, P) valid positions."""
    lengths = np.asarray(lengths)
    return np.arange(n_steps)[None, :] < lengths[:, None], np.arange(n_pos)[None, :] < lengths[:, None]


def jacobian_shares(norms: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N, T, P) each position's share of the step's Jacobian norm (rows sum to 1), NaN elsewhere."""
    norms = np.asarray(norms, dtype=float)
    steps, pos = _valid(lengths, norms.shape[1], norms.shape[2])
    ok = steps[:, :, None] & pos[:, None, :]
    x = np.where(ok, norms, 0.0)
    tot = x.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok & (tot > 0), x / tot, np.nan)


def truth_sets(norms: np.ndarray, lengths: np.ndarray, rel: float = 0.5) -> np.ndarray:
    """(N, T, P) bool: the positions a step reads, from Jacobian norms (N, T, P).

    A position belongs to the set when its norm is at least ``rel`` × the step's largest norm
    (so the set is never empty). ``rel=1`` keeps only the top position.

    >>> truth_sets(np.array([[[1.0, 0.1, 0.6]]]), np.array([3]), rel=0.5).astype(int)
    array([[[1, 0, 1]]])
    """
    if not 0 < rel <= 1:
        raise ValueError(f"rel must be in (0, 1], got {rel!r}")
    norms = np.asarray(norms, dtype=float)
    if norms.ndim != 3:
        raise ValueError(f"norms must be (sequences, steps, positions), got shape {norms.shape}")
    steps, pos = _valid(lengths, norms.shape[1], norms.shape[2])
    ok = steps[:, :, None] & pos[:, None, :]
    x = np.where(ok, norms, -np.inf)
    top = x.max(-1, keepdims=True)
    return ok & (x >= rel * top) & (top > 0)


@torch.no_grad()
def counterfactual_reads(model: nn.Module, batch: Batch, n_swaps: int = 3, seed: int = 0) -> np.ndarray:
    """(N, T, P): share of ``n_swaps`` random replacements of input ``i`` that change the token
    emitted at step ``t`` (LSTM: with the decoder prefix held at the original output).

    A gradient-free check of what the model reads: the source ``n−1−t`` must flip the output
    every time; a position the output only leans on (a query) need not.
    """
    if not (isinstance(n_swaps, int) and n_swaps >= 1):
        raise ValueError(f"n_swaps must be a positive int, got {n_swaps!r}")
    g = torch.Generator().manual_seed(seed)
    emitted = model.predict(batch.src, batch.lengths)
    n, length = batch.src.shape
    changed = torch.zeros(n, length, length)
    for i in range(length):
        rows = (batch.lengths > i).nonzero().flatten()
        if len(rows) == 0:
            continue
        sub = batch.select(rows)
        for _ in range(n_swaps):
            src = sub.src.clone()
            shift = torch.randint(1, model.task.n_symbols, (len(rows),), generator=g)
            src[:, i] = (src[:, i] - FIRST_SYMBOL + shift) % model.task.n_symbols + FIRST_SYMBOL  # always another symbol
            swapped = Batch(src, sub.tgt, sub.lengths)
            out = model.all_logits(swapped, emitted[rows]).argmax(-1)
            changed[rows, :, i] += (out != emitted[rows]).float() / n_swaps
    steps, pos = _valid(_np(batch.lengths), length, length)
    return np.where(steps[:, :, None] & pos[:, None, :], changed.numpy(), np.nan)


# ---------------------------------------------------------------------------------------------
# scores of an attribution matrix (N sequences × T steps × P positions, higher = important)


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    """``np.nanmean`` that returns NaN for all-NaN slices without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def source_positions(lengths: np.ndarray, n_steps: int) -> np.ndarray:
    """(N, T): the true source ``n−1−t`` of each step, −1 where the step does not exist."""
    lengths = np.asarray(lengths)
    t = np.arange(n_steps)[None, :]
    return np.where(t < lengths[:, None], lengths[:, None] - 1 - t, -1)


def _check_scores(scores: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=float)
    lengths = np.asarray(lengths)
    if scores.ndim != 3 or scores.shape[1] != scores.shape[2]:
        raise ValueError(
            f"scores must be (sequences, steps, positions) with as many steps as positions, got shape {scores.shape}"
        )
    if lengths.shape != (scores.shape[0],):
        raise ValueError(f"lengths must have shape ({scores.shape[0]},), got {lengths.shape}")
    if lengths.min() < 1 or lengths.max() > scores.shape[2]:
        raise ValueError(f"lengths must lie in [1, {scores.shape[2]}], got {lengths.min()}..{lengths.max()}")
    steps, pos = _valid(lengths, scores.shape[1], scores.shape[2])
    ok = steps[:, :, None] & pos[:, None, :]
    if np.isnan(scores[ok]).any():
        raise ValueError("scores contain NaN at real steps/positions")
    return scores, steps, ok


def source_rank(scores: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N, T): rank of the true source ``n−1−t`` among the real positions (0 = top), NaN for
    missing steps. Ties count against the source, so constant scores get no credit.

    >>> s = np.array([[[0.1, 0.9], [0.5, 0.5]]])           # n = 2: sources are 1, then 0
    >>> source_rank(s, np.array([2]))
    array([[0., 1.]])
    """
    scores, steps, ok = _check_scores(scores, lengths)
    src = source_positions(lengths, scores.shape[1])
    at_src = np.take_along_axis(scores, np.maximum(src, 0)[:, :, None], axis=2)
    others = ok.copy()
    np.put_along_axis(others, np.maximum(src, 0)[:, :, None], False, axis=2)
    rank = (others & (scores >= at_src)).sum(-1).astype(float)
    return np.where(steps, rank, np.nan)


def set_hit(scores: np.ndarray, truth: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N, T): 1 where the top-k positions (k = size of the true set) are exactly the set, i.e.
    every position in the set scores strictly above every position outside it; NaN for
    missing steps.

    >>> s = np.array([[[3.0, 1.0], [2.0, 2.0]]]); truth = np.array([[[True, False], [True, False]]])
    >>> set_hit(s, truth, np.array([2]))            # step 1 is a tie: no credit
    array([[1., 0.]])
    """
    scores, steps, ok = _check_scores(scores, lengths)
    truth = np.asarray(truth, dtype=bool)
    if truth.shape != scores.shape:
        raise ValueError(f"truth has shape {truth.shape}, scores {scores.shape}")
    inside = truth & ok
    outside = ~truth & ok
    lo = np.where(inside, scores, np.inf).min(-1)
    hi = np.where(outside, scores, -np.inf).max(-1)
    hit = (lo > hi) & inside.any(-1)
    return np.where(steps, hit.astype(float), np.nan)


def mass_share(scores: np.ndarray, truth: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N, T): share of the step's (non-negative) score mass on the true set; NaN for missing
    steps or an all-zero row.

    >>> s = np.array([[[3.0, 1.0], [1.0, 1.0]]]); truth = np.array([[[True, False], [True, False]]])
    >>> mass_share(s, truth, np.array([2]))
    array([[0.75, 0.5 ]])
    """
    scores, steps, ok = _check_scores(scores, lengths)
    if (scores[ok] < 0).any():
        raise ValueError("mass_share needs non-negative scores (use |attribution| or kept information)")
    truth = np.asarray(truth, dtype=bool)
    if truth.shape != scores.shape:
        raise ValueError(f"truth has shape {truth.shape}, scores {scores.shape}")
    x = np.where(ok, scores, 0.0)
    tot = x.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(truth, x, 0.0).sum(-1) / tot
    return np.where(steps & (tot > 0), share, np.nan)


def log_spread(log_scores: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N,): per sequence, the std across steps of the true source's score on a log scale.

    Every step copies its source whole, so a coherent measure gives the source the same score
    at every step (spread near 0); a spread of 1 is a factor-e drift. Pass ``log(score)`` for
    gradient methods and ``−log σ`` (kept nats / K) for EntropyAttribution: for a linear
    feature ``σ_i ∝ 1/‖J_i‖``, so both read on the same scale (a CV of kept nats would depend on
    the arbitrary σ cap). NaN for sequences with fewer than 2 steps.

    >>> s = np.log(np.array([[[1.0, 2.0], [2.0, 1.0]], [[1.0, 1.0], [np.e, 1.0]]]))
    >>> log_spread(s, np.array([2, 2]))
    array([0. , 0.5])
    """
    log_scores, steps, _ = _check_scores(log_scores, lengths)
    src = source_positions(lengths, log_scores.shape[1])
    at_src = np.take_along_axis(log_scores, np.maximum(src, 0)[:, :, None], axis=2)[..., 0]
    x = np.where(steps, at_src, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        spread = np.nanstd(x, axis=1)
    return np.where(steps.sum(1) >= 2, spread, np.nan)


def per_sequence(values: np.ndarray) -> np.ndarray:
    """(N, T) -> (N,): mean over each sequence's real steps (the unit the bootstrap resamples)."""
    values = np.asarray(values, dtype=float)
    return _nanmean(values, axis=1) if values.ndim == 2 else values


def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-sequence ``values`` (NaN dropped) and its percentile bootstrap interval.

    >>> m, lo, hi = bootstrap_ci(np.array([0.0, 1.0] * 50))
    >>> m, lo < 0.5 < hi
    (0.5, True)
    """
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        raise ValueError("bootstrap_ci got no finite values")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(1)
    a = (1 - level) / 2
    return float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


# ---------------------------------------------------------------------------------------------
# the experiment

ENTROPY_VARIANTS: dict[str, dict[str, Any]] = {
    "entropy": {},
    "entropy_adam": {"update": "adam", "entropy_weight": 0.1},
}
"""EntropyAttribution settings compared: the package defaults (the tolerance objective, newton
update) and the authors' penalised objective solved by Adam (``entropy_weight=0.1``). Both get
``max_steps`` and ``seed`` from :func:`run_experiment`."""

METHODS = (*ENTROPY_VARIANTS, "saliency", "input_x_gradient", "layer_ig")
"""Word-level scores (higher = more important) of each method:

* ``entropy``, ``entropy_adam``: EntropyAttribution's kept information
  ``max_token_entropy − H(X_i|s)`` in nats (``result.importance(normalize=False)``; ranks
  like −H, and is ≥ 0).
* ``saliency``: Captum ``Saliency`` on the embedded source, L2 norm over the embedding width
  (at the clean input this *is* the Jacobian norm the ground truth is built from).
* ``input_x_gradient``: Captum ``InputXGradient``, |sum over the embedding width|.
* ``layer_ig``: Captum ``LayerIntegratedGradients`` on ``model.embedding``, baseline all-PAD
  ids (a zero embedding: ``padding_idx``), |sum over the embedding width|.
"""


def fit_feature_std(model: nn.Module, batch: Batch, layer: int | None = None) -> Tensor:
    """σ_S for the explained features, with :class:`~captum_entropy.FeatureStats`.

    Pooled over every real (sequence, step) pair: the std of each logit (layer ``None``), or
    of each hidden dimension after ``layer`` encoder layers (Transformer), over the rows
    ``feature[mask]``. One σ_S per model and layer, shared by all steps, so scores are
    comparable across timestamps.
    """
    from .stats import FeatureStats

    if layer is not None and not isinstance(model, ReverseTransformer):
        raise ValueError("layer= needs a ReverseTransformer (the LSTM has no encoder layers to explain)")
    emitted = model.predict(batch.src, batch.lengths)

    def rows(src: Tensor, lengths: Tensor, emitted: Tensor) -> Tensor:
        b = Batch(src, src, lengths)
        feat = model.all_logits(b, emitted) if layer is None else model.hidden(src, b.mask, layer)
        return feat[b.mask]

    return FeatureStats().fit(rows, [(batch.src, batch.lengths, emitted)])["output"]


@dataclass
class Experiment:
    """Everything :func:`run_experiment` measured on N sequences (arrays are numpy).

    Attributes:
        kind: ``"lstm"`` or ``"transformer"``.
        lengths: (N,) sequence lengths.
        correct: (N, T) the emitted token equals the reversal (NaN on missing steps).
        scores: method -> (N, T, P) word scores for the emitted token's logit at each step.
        jacobian: (N, T, P) Jacobian norms of that logit (the ground truth's raw material).
        truth: (N, T, P) bool, the positions each step reads (:func:`truth_sets`).
        counterfactual: (N, T, P) share of token swaps at ``i`` that flip the output at ``t``.
        n_dims: K, the width of ``model.embedding`` (kept nats / K = −log σ + const).
        layer_scores: (method, l) -> (N, T, P) scores for the Transformer's hidden vector at
            ``t`` after ``l`` layers; ``layer_jacobian`` / ``layer_truth``: l -> its truth.
        converged: (method, feature) -> share of EntropyAttribution runs that converged.
        seconds: method (or ``method@layerL``) -> wall time.
        settings: what was run.
    """

    kind: str
    lengths: np.ndarray
    correct: np.ndarray
    scores: dict[str, np.ndarray]
    jacobian: np.ndarray
    truth: np.ndarray
    counterfactual: np.ndarray | None = None
    n_dims: int = 1
    layer_scores: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    layer_jacobian: dict[int, np.ndarray] = field(default_factory=dict)
    layer_truth: dict[int, np.ndarray] = field(default_factory=dict)
    converged: dict[tuple[str, str], float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


def _explain_step(
    model: nn.Module, step: Step, sub: Batch, method: str, std: Tensor, entropy_kwargs: dict[str, Any], ig_steps: int,
) -> tuple[Tensor, float | None]:
    """(B, P) word scores of one method for one step (NaN on padding), and the converged share."""
    from captum.attr import InputXGradient, LayerIntegratedGradients, Saliency

    from .attr import EntropyAttribution

    if method in ENTROPY_VARIANTS:
        ea = EntropyAttribution(step.forward, model.embedding)
        res = ea.explain(sub.src, target=step.target, additional_forward_args=step.extra, mask=sub.mask,
                         feature_std=std, **entropy_kwargs, **ENTROPY_VARIANTS[method])
        kept = res.importance(normalize=False).clamp_min(0.0)  # float error at the cap gives -1e-5
        return kept, float(res.converged.float().mean())
    if step.target is None:
        raise ValueError(f"{method} needs a scalar feature (a target); hidden-vector features are for entropy only")
    emb = model.embedding(sub.src).detach().requires_grad_(True)
    if method == "saliency":
        attr = Saliency(step.forward_embedded).attribute(emb, target=step.target, additional_forward_args=step.extra)
        word = attr.norm(dim=-1)
    elif method == "input_x_gradient":
        attr = InputXGradient(step.forward_embedded).attribute(emb, target=step.target, additional_forward_args=step.extra)
        word = attr.sum(-1).abs()
    elif method == "layer_ig":
        lig = LayerIntegratedGradients(step.forward, model.embedding)
        attr = lig.attribute(sub.src, baselines=torch.full_like(sub.src, PAD), target=step.target,
                             additional_forward_args=step.extra, n_steps=ig_steps)
        word = attr.sum(-1).abs()
    else:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    return word.detach().masked_fill(~sub.mask, float("nan")), None


def run_experiment(
    model: nn.Module,
    batch: Batch,
    methods: Sequence[str] = METHODS,
    layers: Sequence[int] = (),
    layer_methods: Sequence[str] = ("entropy_adam",),
    stats_batch: Batch | None = None,
    truth_rel: float = 0.5,
    max_steps: int = 100,
    ig_steps: int = 32,
    n_swaps: int = 3,
    seed: int = 0,
    progress: bool = True,
) -> Experiment:
    """Explain, at every output step ``t``, the logit of the emitted token with each method.

    What is explained: for the Transformer, the logit at position ``t`` of the token the model
    emits there; for the LSTM, the logit at decoder step ``t`` of the token it emits, with the
    decoder fed ``BOS`` and its own greedy outputs before ``t`` (held fixed: only the
    encoder's source is perturbed). All methods act on the output of ``model.embedding`` (the
    source's token embeddings) and explain the same scalar (Captum ``target`` = the emitted
    ids). EntropyAttribution gets ``feature_std`` from :func:`fit_feature_std` on
    ``stats_batch`` (default: 256 fresh sequences) and ``max_steps``; see
    :data:`ENTROPY_VARIANTS`.

    ``layers`` (Transformer only): for each l, the entropy variants in ``layer_methods`` also
    explain the hidden vector at ``t`` after l encoder layers (its whole D-vector, σ_S per
    dimension), scored against that vector's own Jacobian truth. The gradient methods need a
    scalar, so they run on the logits only.
    """
    from tqdm.auto import tqdm

    unknown = [m for m in (*methods, *layer_methods) if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {METHODS}")
    not_entropy = [m for m in layer_methods if m not in ENTROPY_VARIANTS]
    if layers and not_entropy:
        raise ValueError(f"layer_methods must be entropy variants {tuple(ENTROPY_VARIANTS)}, got {not_entropy}")
    if layers and not isinstance(model, ReverseTransformer):
        raise ValueError("layers= needs a ReverseTransformer (the LSTM has no encoder layers to explain)")
    n_layers = len(model.layers) if isinstance(model, ReverseTransformer) else 0
    bad = [l for l in layers if not (isinstance(l, int) and 1 <= l <= n_layers)]
    if bad:
        raise ValueError(f"layers must be ints in [1, {n_layers}], got {bad}")
    if not (isinstance(max_steps, int) and max_steps >= 1):
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
    model.eval()
    stats_batch = stats_batch if stats_batch is not None else make_batch(256, model.task, seed=seed + 777)
    stds: dict[int | None, Tensor] = {None: fit_feature_std(model, stats_batch)}
    for l in layers:
        stds[l] = fit_feature_std(model, stats_batch, layer=l)
    entropy_kwargs = dict(max_steps=max_steps, seed=seed)

    emitted = model.predict(batch.src, batch.lengths)
    n, length = batch.src.shape
    lengths = _np(batch.lengths)
    nan3 = lambda: torch.full((n, length, length), float("nan"))  # noqa: E731
    jac: dict[int | None, Tensor] = {f: nan3() for f in [None, *layers]}
    plan = [(m, None) for m in methods] + [(m, l) for l in layers for m in layer_methods]
    out = {key: nan3() for key in plan}
    conv: dict[tuple[str, str], float] = {}
    seconds = {(m if l is None else f"{m}@layer{l}"): 0.0 for m, l in plan}
    bar = tqdm(total=length * len(plan), desc=f"explain {model.cfg.kind}", disable=not progress, leave=False)
    try:
        for t in range(length):
            rows = (batch.lengths > t).nonzero().flatten()
            if len(rows) == 0:
                bar.update(len(plan))
                continue
            sub = batch.select(rows)
            emb = model.embedding(sub.src).detach()
            steps = {f: model.step(sub, t, emitted[rows]) if f is None else model.step(sub, t, emitted[rows], layer=f)
                     for f in jac}
            for f, step in steps.items():
                norms = jacobian_norms(step.forward_embedded, emb, step.extra, step.target, scale=stds[f])
                jac[f][rows, t] = norms.masked_fill(~sub.mask, float("nan"))
            for m, f in plan:
                start = time.perf_counter()
                word, c = _explain_step(model, steps[f], sub, m, stds[f], entropy_kwargs, ig_steps)
                seconds[m if f is None else f"{m}@layer{f}"] += time.perf_counter() - start
                out[(m, f)][rows, t] = word.float()
                if c is not None:
                    key = (m, "logit" if f is None else f"layer {f}")
                    conv[key] = conv.get(key, 0.0) + c * len(rows)
                bar.update(1)
    finally:
        bar.close()
    start = time.perf_counter()
    cf = counterfactual_reads(model, batch, n_swaps=n_swaps, seed=seed) if n_swaps else None
    seconds["counterfactual"] = time.perf_counter() - start
    valid_steps, _ = _valid(lengths, length, length)
    n_runs = float(valid_steps.sum())
    jac_np = {f: _np(j) for f, j in jac.items()}
    return Experiment(
        kind=model.cfg.kind, lengths=lengths,
        correct=np.where(valid_steps, _np(emitted == batch.tgt).astype(float), np.nan),
        scores={m: _np(out[(m, None)]) for m in methods},
        jacobian=jac_np[None], truth=truth_sets(jac_np[None], lengths, truth_rel), counterfactual=cf,
        n_dims=int(model.embedding.embedding_dim),
        layer_scores={(m, l): _np(out[(m, l)]) for m, l in plan if l is not None},
        layer_jacobian={l: jac_np[l] for l in layers},
        layer_truth={l: truth_sets(jac_np[l], lengths, truth_rel) for l in layers},
        converged={k: v / n_runs for k, v in conv.items()},
        seconds=seconds,
        settings={"methods": list(methods), "layers": list(layers), "layer_methods": list(layer_methods),
                  "truth_rel": truth_rel, "max_steps": max_steps, "ig_steps": ig_steps, "n_swaps": n_swaps,
                  "seed": seed, "n_sequences": int(n)},
    )


# ---------------------------------------------------------------------------------------------
# summaries


def _log_scale(scores: np.ndarray, method: str, n_dims: int) -> np.ndarray:
    """Scores on a log scale: kept nats / K (= −log σ + const) for entropy, log(score) else."""
    if method in ENTROPY_VARIANTS:
        return scores / n_dims
    with np.errstate(divide="ignore"):
        return np.log(scores)


def summarize(exp: Experiment, seed: int = 0) -> list[dict[str, Any]]:
    """One row per (method, feature) with bootstrap 95 % intervals over sequences.

    Columns, each ``(mean, low, high)``: ``diag`` (share of steps whose true source ranks
    first), ``rank`` (mean rank of the source, 0 = top), ``set_hit`` (top-k = the Jacobian
    set), ``mass`` (share of score mass on the set), ``spread`` (coherence, :func:`log_spread`:
    std across steps of the source's log-scale score, lower = more coherent) and
    ``source_score`` (mean score of the source, in the method's own units), ``source_zero``
    (share of steps where the source scores exactly 0; for EntropyAttribution: σ at the cap,
    the source counted as fully forgotten); ``converged``:
    share of EntropyAttribution runs that converged (``None`` for the other methods).
    """
    items = [(m, "logit", s, exp.truth) for m, s in exp.scores.items()]
    items += [(m, f"layer {l}", s, exp.layer_truth[l]) for (m, l), s in exp.layer_scores.items()]
    rows = []
    for method, feature, s, truth in items:
        rank = source_rank(s, exp.lengths)
        src = source_positions(exp.lengths, s.shape[1])
        at_src = np.take_along_axis(s, np.maximum(src, 0)[:, :, None], axis=2)[..., 0]
        ci = lambda v: bootstrap_ci(per_sequence(v), seed=seed)  # noqa: E731
        rows.append({
            "model": exp.kind, "method": method, "feature": feature,
            "diag": ci(np.where(np.isnan(rank), np.nan, rank == 0)),
            "rank": ci(rank),
            "set_hit": ci(set_hit(s, truth, exp.lengths)),
            "mass": ci(mass_share(s, truth, exp.lengths)),
            "spread": bootstrap_ci(log_spread(_log_scale(s, method, exp.n_dims), exp.lengths), seed=seed),
            "source_score": ci(np.where(src >= 0, at_src, np.nan)),
            "source_zero": ci(np.where(src >= 0, at_src == 0, np.nan)),
            "converged": exp.converged.get((method, feature)),
        })
    return rows


def truth_summary(exp: Experiment, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """What the model provably reads, each as ``(mean, low, high)`` over sequences.

    Jacobian (emitted logit): ``source_top`` (the source has the largest norm),
    ``source_share`` / ``self_share`` (share of the norm on the source, and on token ``t``
    itself for steps with ``t ≠ n−1−t``), ``set_size`` (truth-set size),
    ``set_is_source_and_self`` (the set is exactly {n−1−t, t}, steps with ``t ≠ n−1−t``).
    Token swaps (:func:`counterfactual_reads`), how often swapping an input flips the emitted
    token: ``swap_source``, ``swap_self`` (token t), ``swap_emitted`` (sources of earlier
    steps, i > n−1−t) and ``swap_pending`` (sources of later steps, i < n−1−t), the last two
    without token t.
    """
    n, length, _ = exp.jacobian.shape
    lengths = exp.lengths
    src = source_positions(lengths, length)
    valid_steps, valid_pos = _valid(lengths, length, length)
    t = np.broadcast_to(np.arange(length)[None, :], (n, length))
    off = valid_steps & (src != t)
    shares = jacobian_shares(exp.jacobian, lengths)
    take = lambda a, idx: np.take_along_axis(a, np.maximum(idx, 0)[:, :, None], axis=2)[..., 0]  # noqa: E731
    rank = source_rank(np.nan_to_num(exp.jacobian, nan=0.0), lengths)
    both = np.zeros_like(exp.truth)
    np.put_along_axis(both, np.maximum(src, 0)[:, :, None], True, axis=2)
    np.put_along_axis(both, t[:, :, None], True, axis=2)
    out = {
        "source_top": np.where(np.isnan(rank), np.nan, rank == 0),
        "source_share": take(shares, src),
        "self_share": np.where(off, take(shares, t), np.nan),
        "set_size": exp.truth.sum(-1).astype(float),
        "set_is_source_and_self": np.where(off, (exp.truth == both).all(-1), np.nan),
    }
    if exp.counterfactual is not None:
        cf = exp.counterfactual
        pos = np.arange(length)[None, None, :]
        not_self = pos != t[:, :, None]
        group = lambda sel: _nanmean(np.where(sel & valid_pos[:, None, :], cf, np.nan), axis=-1)  # noqa: E731
        out |= {
            "swap_source": take(cf, src),
            "swap_self": np.where(off, take(cf, t), np.nan),
            "swap_emitted": group((pos > src[:, :, None]) & not_self),
            "swap_pending": group((pos < src[:, :, None]) & not_self),
        }
    return {k: bootstrap_ci(per_sequence(np.where(valid_steps, v, np.nan)), seed=seed) for k, v in out.items()}
