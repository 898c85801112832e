"""Faithfulness at word level: take words away in the order a method ranks them, watch the prediction.

For one sentence with word scores ``s`` (higher = more important) and the predicted class's
probability ``p0``:

* **deletion** curve: the probability with the top 10 %, 20 %, …, 100 % of words removed;
  ``deletion_aopc`` = mean of ``p0 − p`` over those steps (higher = more faithful).
* **insertion** curve: the probability with only the top 0 %, 10 %, …, 100 % kept;
  ``insertion_aopc`` = mean of ``p − p(nothing kept)`` over 10 %…100 % (higher = better).
* ERASER **comprehensiveness** (``p0 − p`` without the top 1/5/10/20/50 %, averaged; higher =
  better) and **sufficiency** (``p0 − p`` with only those kept; lower = better).
* ``loo_tau``: Kendall's τ between ``s`` and leave-one-out (``p0 − p`` without each word);
  ``loo_tau_abs`` against ``|p0 − p|``: for methods that score how much the prediction depends on
  a word whichever way it pushes (EntropyAttribution, Saliency), the signed metrics above also
  count a word that pushes *against* the predicted class as a mistake.
* **Magnitude** versions of deletion, comprehensiveness and sufficiency (``deletion_aopc_abs``,
  ``comprehensiveness_abs``, ``sufficiency_abs``): the same removals scored by ``|p0 − p|``, how
  far the prediction moves whichever way. They ask the unsigned methods' own question (how much
  does the prediction depend on these words?) in the signed metrics' units, so the two read side
  by side: a signed score below its magnitude counterpart means the removed words included ones
  that pushed against the class. (The probability: the same scale on every model, and the one
  the signed metrics use.)
* The same four scored in **log-odds** of the predicted class, ``|lo0 − lo|`` with
  ``lo = log p − log(1 − p)`` (``deletion_aopc_logodds``, ``comprehensiveness_logodds``,
  ``sufficiency_logodds``, ``loo_tau_logodds``). A probability near 1 can fall far but rise
  little, so ``|p0 − p|`` still credits the words that push towards a confident class more than
  those that push against it; the log-odds move by the same amount either way for the same
  evidence (a logistic model: by the word's weight), and they are what a logit-valued
  feature, the one EntropyAttribution explains by default, moves in.

"Removed" is done three ways (:data:`REMOVALS`), so out-of-distribution effects can be told
apart from attribution quality: ``delete`` (the word's tokens cut out, the rest moves up; a text with nothing left is one
padding token),
``mask`` (its ids replaced by the tokenizer's [MASK], else padding, the mask unchanged),
``noise`` (its embeddings replaced by Gaussian draws with the per-dimension mean and std of the
embedding output over every sentence evaluated, one draw per token shared by every copy). Special tokens are never removed. Every perturbed copy of every sentence goes
through the model in batches (:class:`Perturber`); copies that coincide are run once.

>>> n_top(0.1, 7), n_top(0.5, 7), n_top(0.0, 7), n_top(1.0, 7)
(1, 4, 0, 7)
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..words import WordGrouping

REMOVALS = ("delete", "mask", "noise")
FRACTIONS = tuple(i / 10 for i in range(11))
ERASER_BINS = (0.01, 0.05, 0.10, 0.20, 0.50)
SIGNED_METRICS = ("deletion_aopc", "insertion_aopc", "comprehensiveness", "sufficiency", "loo_tau")
MAGNITUDE_METRICS = ("deletion_aopc_abs", "comprehensiveness_abs", "sufficiency_abs", "loo_tau_abs")
LOG_ODDS_METRICS = ("deletion_aopc_logodds", "comprehensiveness_logodds", "sufficiency_logodds", "loo_tau_logodds")
METRICS = SIGNED_METRICS + MAGNITUDE_METRICS + LOG_ODDS_METRICS
HIGHER_IS_BETTER = {"deletion_aopc": True, "insertion_aopc": True, "comprehensiveness": True, "sufficiency": False,
                    "loo_tau": True, "deletion_aopc_abs": True, "comprehensiveness_abs": True, "sufficiency_abs": False,
                    "loo_tau_abs": True, "deletion_aopc_logodds": True, "comprehensiveness_logodds": True,
                    "sufficiency_logodds": False, "loo_tau_logodds": True}


def n_top(fraction: float, n_words: int) -> int:
    """How many words "the top ``fraction``" is: at least one for any fraction > 0."""
    return 0 if fraction <= 0 else min(n_words, max(1, math.ceil(fraction * n_words - 1e-9)))


def ranking(scores: Tensor) -> list[int]:
    """Word indices from most to least important (ties: sentence order)."""
    s = scores.tolist()
    return sorted(range(len(s)), key=lambda w: (math.inf if math.isnan(s[w]) else -s[w], w))


class Perturber:
    """The predicted class's probability for sentences with sets of words removed, batched.

    Args:
        zoo_model: a :class:`~captum_entropy.zoo.ZooModel` (``forward(ids, mask)``, ``embedding``).
        ids, mask: the clean batch (B, T); groupings: its words; target: the class per sentence.
        removal: one of :data:`REMOVALS`. batch_size: perturbed copies per forward.
    """

    def __init__(self, zoo_model: Any, ids: Tensor, mask: Tensor, groupings: Sequence[WordGrouping], target: Tensor,
                 removal: str = "delete", batch_size: int = 128, seed: int = 0,
                 noise_stats: tuple[Tensor, Tensor] | None = None, first_index: int = 0) -> None:
        if removal not in REMOVALS:
            raise ValueError(f"removal must be one of {REMOVALS}, got {removal!r}")
        self.zm, self.ids, self.mask, self.groupings = zoo_model, ids, mask, list(groupings)
        self.target, self.removal, self.batch_size, self.seed = target, removal, batch_size, seed
        tok = getattr(zoo_model, "tokenizer", None)
        mask_id = getattr(tok, "mask_token_id", None)
        self.mask_id = int(mask_id) if isinstance(mask_id, int) else int(zoo_model.pad_token_id)
        if removal == "noise":  # one draw per token, shared by every copy (common random numbers)
            mean, std = noise_stats if noise_stats is not None else embedding_stats(zoo_model, [(ids, mask)])
            draws = torch.zeros((*ids.shape, mean.numel()))
            for b, n in enumerate(mask.sum(1).tolist()):  # seeded by the sentence's dataset index, drawn for
                g = torch.Generator().manual_seed(seed * 1_000_003 + first_index + b)  # its own tokens only:
                draws[b, : int(n)] = torch.randn((int(n), mean.numel()), generator=g)  # batching never matters
            self.noise = mean.to(ids.device) + std.to(ids.device) * draws.to(ids.device)
        self._cache: dict[tuple[int, frozenset], tuple[float, float]] = {}

    def probabilities(self, requests: Iterable[tuple[int, frozenset]]) -> list[float]:
        """``p(target | sentence b without the words in the set)`` for each ``(b, words)``."""
        return [p for p, _ in self._outputs(requests)]

    def log_odds(self, requests: Iterable[tuple[int, frozenset]]) -> list[float]:
        """``log p − log(1 − p)`` of the same, from the logits (exact where ``p`` rounds to 1)."""
        return [lo for _, lo in self._outputs(requests)]

    def _outputs(self, requests: Iterable[tuple[int, frozenset]]) -> list[tuple[float, float]]:
        requests = list(requests)
        todo = list(dict.fromkeys(r for r in requests if r not in self._cache))
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i:i + self.batch_size]
            for r, out in zip(chunk, self._run(chunk)):
                self._cache[r] = out
        return [self._cache[r] for r in requests]

    def _positions(self, b: int, words: frozenset) -> list[int]:
        word_of = self.groupings[b].word_of
        return [t for t, w in enumerate(word_of) if w in words]

    @torch.no_grad()
    def _run(self, chunk: list[tuple[int, frozenset]]) -> list[tuple[float, float]]:
        rows = torch.tensor([b for b, _ in chunk], device=self.ids.device)
        ids, mask = self.ids[rows].clone(), self.mask[rows].clone()
        gone = torch.zeros_like(mask, dtype=torch.bool)
        for i, (b, words) in enumerate(chunk):
            gone[i, self._positions(b, words)] = True
        if self.removal == "delete":
            ids, mask = _cut(ids, mask, gone, int(self.zm.pad_token_id))
            logits = self.zm.forward(ids, mask)
        elif self.removal == "mask":
            logits = self.zm.forward(torch.where(gone, torch.full_like(ids, self.mask_id), ids), mask)
        else:
            noise = self.noise[rows]

            def swap(emb: Tensor) -> Tensor:
                return torch.where(gone[..., None], noise.to(emb.dtype), emb)

            from ..hooks import replace

            with replace(self.zm.embedding, swap):
                logits = self.zm.forward(ids, mask)
        return list(zip(*_probability_and_log_odds(logits, self.target[rows])))


def _probability_and_log_odds(logits: Tensor, target: Tensor) -> tuple[list[float], list[float]]:
    """The target class's probability and its log-odds ``log p − log Σ_{j≠c} p_j``, per row.

    >>> p, lo = _probability_and_log_odds(torch.tensor([[0.0, 2.0], [30.0, 0.0]]), torch.tensor([1, 0]))
    >>> [round(v, 4) for v in p], [round(v, 4) for v in lo]
    ([0.8808, 1.0], [2.0, 30.0])
    """
    logp = torch.log_softmax(logits.double(), -1)
    rows = torch.arange(len(target), device=logits.device)
    mine = logp[rows, target]
    others = logp.index_put((rows, target), torch.tensor(-math.inf, dtype=logp.dtype, device=logp.device)).logsumexp(-1)
    return torch.softmax(logits.float(), -1)[rows, target].tolist(), (mine - others).tolist()


@torch.no_grad()
def embedding_stats(zoo_model: Any, batches: Iterable[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Per-dimension mean and std of the embedding output over every real token of ``batches``."""
    total, sq, n = None, None, 0
    for ids, mask in batches:
        real = zoo_model.embedding(ids).double()[mask.bool()]
        total = real.sum(0) if total is None else total + real.sum(0)
        sq = (real ** 2).sum(0) if sq is None else sq + (real ** 2).sum(0)
        n += real.shape[0]
    if not n:
        raise ValueError("no real tokens to take the embedding statistics from")
    mean = total / n
    return mean.float(), (sq / n - mean ** 2).clamp(min=0).sqrt().float()


def _cut(ids: Tensor, mask: Tensor, gone: Tensor, pad_id: int) -> tuple[Tensor, Tensor]:
    """Drop the ``gone`` positions of each row; the rest moves left, padded at the end."""
    keep = mask.bool() & ~gone
    n = int(keep.sum(1).max()) if keep.numel() else 0
    out_ids = torch.full((ids.shape[0], max(n, 1)), pad_id, dtype=ids.dtype, device=ids.device)
    out_mask = torch.zeros((ids.shape[0], max(n, 1)), dtype=mask.dtype, device=mask.device)
    for i in range(ids.shape[0]):
        kept = ids[i][keep[i]]
        out_ids[i, : kept.numel()] = kept
        out_mask[i, : max(1, kept.numel())] = 1  # nothing left: one padding token stands for the empty text
    return out_ids, out_mask


def faithfulness(perturber: Perturber, scores: Sequence[Tensor]) -> list[dict[str, Any]]:
    """Per sentence: the metrics of :data:`METRICS` and the two curves, for word ``scores``."""
    requests, layout = [], []
    for b, s in enumerate(scores):
        order, W = ranking(s), len(s)
        top = lambda f: frozenset(order[: n_top(f, W)])  # noqa: E731
        rest = lambda f: frozenset(order[n_top(f, W):])  # noqa: E731
        plan = {"p0": [frozenset()], "deletion": [top(f) for f in FRACTIONS[1:]],
                "insertion": [rest(f) for f in FRACTIONS], "comp": [top(k) for k in ERASER_BINS],
                "suff": [rest(k) for k in ERASER_BINS], "loo": [frozenset([w]) for w in range(W)]}
        where = {}
        for k, v in plan.items():
            where[k] = (len(requests), len(v))
            requests += [(b, words) for words in v]
        layout.append(where)
    probs, odds = perturber.probabilities(requests), perturber.log_odds(requests)
    out = []
    for b, s in enumerate(scores):
        get = {k: np.asarray(probs[a:a + n]) for k, (a, n) in layout[b].items()}
        lo = {k: np.asarray(odds[a:a + n]) for k, (a, n) in layout[b].items()}
        p0, lo0 = float(get["p0"][0]), float(lo["p0"][0])
        loo = p0 - get["loo"]
        out.append({
            "p0": p0, "n_words": len(s),
            "deletion_curve": [p0, *get["deletion"].tolist()], "insertion_curve": get["insertion"].tolist(),
            "deletion_aopc": float(np.mean(p0 - get["deletion"])) if len(s) else math.nan,
            "insertion_aopc": float(np.mean(get["insertion"][1:] - get["insertion"][0])) if len(s) else math.nan,
            "comprehensiveness": float(np.mean(p0 - get["comp"])) if len(s) else math.nan,
            "sufficiency": float(np.mean(p0 - get["suff"])) if len(s) else math.nan,
            "deletion_aopc_abs": float(np.mean(np.abs(p0 - get["deletion"]))) if len(s) else math.nan,
            "comprehensiveness_abs": float(np.mean(np.abs(p0 - get["comp"]))) if len(s) else math.nan,
            "sufficiency_abs": float(np.mean(np.abs(p0 - get["suff"]))) if len(s) else math.nan,
            "loo_tau": _kendall(s.numpy(), loo), "loo_tau_abs": _kendall(s.numpy(), np.abs(loo)),
            "deletion_aopc_logodds": float(np.mean(np.abs(lo0 - lo["deletion"]))) if len(s) else math.nan,
            "comprehensiveness_logodds": float(np.mean(np.abs(lo0 - lo["comp"]))) if len(s) else math.nan,
            "sufficiency_logodds": float(np.mean(np.abs(lo0 - lo["suff"]))) if len(s) else math.nan,
            "loo_tau_logodds": _kendall(s.numpy(), np.abs(lo0 - lo["loo"])),
            "loo": loo.tolist(), "log_odds0": lo0, "deletion_logodds_curve": [lo0, *lo["deletion"].tolist()],
        })
    return out


def cancellation(scores: Sequence[float], loo: Sequence[float],
                 fractions: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5)) -> tuple[float, float]:
    """Do a method's top words push the prediction the same way? From each word's leave-one-out
    effect ``loo`` (``p0 − p``), for the top ``f`` of words T by ``scores`` (each f in
    ``fractions``), averaged over f:

    * **cancellation** ``1 − |Σ_T loo| / Σ_T |loo|``: 0 when the top words all push one way,
      1 when their single-word effects sum to nothing (first order: interactions aside);
    * **share** ``Σ_T |loo| / Σ_all |loo|``: how much of all single-word effect they hold,
      whichever way it pushes (the unsigned question, without the cancellation).

    A set-removal metric sees roughly ``|Σ_T loo|``, so an unsigned ranking with a high share and a
    high cancellation scores low there for a reason that is not unfaithfulness. NaN where no word
    moves the prediction.

    >>> cancellation([3.0, 2.0, 1.0, 0.0], [0.2, -0.2, 0.0, 0.1], fractions=(0.5,))
    (1.0, 0.8)
    >>> cancellation([3.0, 2.0, 1.0, 0.0], [0.2, 0.2, 0.0, 0.1], fractions=(0.5,))
    (0.0, 0.8)
    """
    effect = np.asarray(loo, dtype=float)
    order, total = ranking(torch.as_tensor(scores, dtype=torch.float64)), float(np.abs(effect).sum())
    cancel, share = [], []
    for f in fractions:
        top = effect[order[: n_top(f, len(effect))]]
        mass = float(np.abs(top).sum())
        cancel.append(1.0 - abs(float(top.sum())) / mass if mass > 0 else math.nan)
        share.append(mass / total if total > 0 else math.nan)
    mean = lambda v: round(float(np.nanmean(v)), 12) if np.isfinite(v).any() else math.nan  # noqa: E731
    return mean(cancel), mean(share)


def _kendall(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import kendalltau

    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(kendalltau(a, b).statistic)
