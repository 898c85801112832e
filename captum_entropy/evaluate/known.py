"""Models whose right answer is known, and how close each method comes to it.

* :func:`ignoring_model`: a trained zoo word model (CNN, LSTM, Transformer) made to **provably
  ignore** a seeded half of its vocabulary: the embedding of those words is multiplied by 0
  after the point where attributions put their noise or take their gradients, so no value at
  their positions can change the output. A faithful method gives them nothing; the score is the
  AUC that a read word outscores an ignored one by absolute score (1 = perfect, 0.5 = chance) and the share of the
  absolute score mass on ignored words (0 = perfect).
* :func:`linear_model`: a bag-of-embeddings logistic model (logit = w·mean of the embeddings),
  where word t's exact contribution to the predicted logit is ``w·e_t / n``: the score is
  Spearman's ρ with it (signed) and with its absolute value.
* :class:`RedundantEvidence`: two words carry the same evidence and the output saturates, so
  either one alone is enough: the objective has two optima (keep word 2, or keep word 5), and
  no common σ is one of them (:func:`redundant_sentences` makes its inputs).

>>> import torch
>>> g = GatedEmbedding(torch.nn.Embedding(5, 2), keep=torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0]))
>>> out = g(torch.tensor([[1, 2, 3]]))
>>> bool((out[0, 1] == 0).all()), bool((out[0, 0] != 0).any())   # word 2 is ignored, word 1 read
(True, True)
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .._deprecated import renamed_keyword
from .methods import Task, entropy_layer, entropy_logit, methods_from


class GatedEmbedding(nn.Module):
    """``inner(ids) * keep[ids]``: the words with ``keep = 0`` reach nothing downstream."""

    def __init__(self, inner: nn.Module, keep: Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("keep", keep.float())

    def forward(self, ids: Tensor) -> Tensor:
        return self.inner(ids) * self.keep[ids][..., None]


def ignoring_model(name: str = "cnn", fraction: float = 0.5, seed: int = 0):
    """A copy of the zoo's trained ``name`` that ignores a seeded ``fraction`` of its vocabulary
    (padding and ``<unk>`` are read); ``(zoo_model, ignored ids)``. Its ``embedding`` (where
    attributions act) is the original embedding, *before* the gate."""
    from ..zoo import ZooModel, load

    if name not in ("cnn", "lstm", "transformer"):
        raise ValueError(f"ignoring_model wraps a zoo word model (cnn, lstm, transformer), not {name!r}")
    zm = load(name)
    model = copy.deepcopy(zm.model).eval()
    vocab = model.embedding.num_embeddings
    g = torch.Generator().manual_seed(seed)
    keep = (torch.rand(vocab, generator=g) >= fraction).float()
    keep[:2] = 1.0
    inner = model.embedding
    model.embedding = GatedEmbedding(inner, keep)
    layers = {n: _same_module(model, zm.model, m) for n, m in zm.layers.items()}
    meta = {**zm.meta, "ignored_fraction": fraction, "seed": seed}
    gated = ZooModel(f"{name}-ignoring", model, zm.tokenize, zm.tokens, inner, layers, zm.label_names, meta,
                     tokenizer=zm.tokenizer, pad_token_id=zm.pad_token_id)
    return gated, keep == 0


def _same_module(new_root: nn.Module, old_root: nn.Module, module: nn.Module) -> nn.Module:
    name = next(n for n, m in old_root.named_modules() if m is module)
    return new_root.get_submodule(name)


class BagOfEmbeddings(nn.Module):
    """logits = W · (masked mean of the embeddings) + b."""

    def __init__(self, vocab: int, dim: int, classes: int = 2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim, padding_idx=0)
        self.head = nn.Linear(dim, classes)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        m = attention_mask.float()[..., None]
        return self.head((self.embedding(input_ids) * m).sum(1) / m.sum(1).clamp(min=1))


def linear_model(seed: int = 0, epochs: int = 3, progress: bool = False):
    """A bag-of-embeddings logistic model on the polarity train split (GloVe init, the zoo's
    tokenizer and training loop), as a :class:`~captum_entropy.zoo.ZooModel`."""
    from ..zoo import LABEL_NAMES, ZooModel, load_polarity
    from ..zoo.models import glove_init
    from ..zoo.text import WordTokenizer
    from ..zoo.training import TrainConfig, fit

    train = load_polarity("train")
    tok = WordTokenizer.from_texts([e.text for e in train])
    torch.manual_seed(seed)
    model = BagOfEmbeddings(len(tok), 50)
    glove_init(model.embedding, tok.vocab)
    fit(model, model.forward, tok, [e.text for e in train], [e.label for e in train],
        TrainConfig(epochs=epochs, lr=5e-3, batch_size=32, seed=seed), progress)
    return ZooModel("linear", model.eval(), tok, tok.tokens, model.embedding, {}, LABEL_NAMES,
                    {"vocab": tok.vocab}, tokenizer=tok, pad_token_id=0)


def _auc(read: np.ndarray, ignored: np.ndarray) -> float:
    """P(a read word's score > an ignored word's), ties counted half (Mann–Whitney U / n₁n₂)."""
    from scipy.stats import mannwhitneyu

    if not len(read) or not len(ignored):
        return float("nan")
    return float(mannwhitneyu(read, ignored).statistic / (len(read) * len(ignored)))


def known_answers(zm: Any, texts: Sequence[str], methods: Any, ignored: Tensor | None = None,
                  feature_std: Any = None, batch_size: int = 16, seed: int = 0,
                  entropy_settings: dict | None = None, stats: Any = None):
    """Per sentence and method, the ground-truth scores: with ``ignored`` (a vocabulary mask from
    :func:`ignoring_model`) ``read_auc`` and ``ignored_share``; without it (a
    :func:`linear_model`) ``rho_signed`` and ``rho_abs`` against the exact contributions.
    A pandas DataFrame."""
    import pandas as pd
    from scipy.stats import spearmanr

    from ..explainer import check_texts, feature_stats

    texts, chosen = check_texts(texts), methods_from(methods)
    feature_std = renamed_keyword("known_answers", "stats", "feature_std", stats, feature_std)
    if feature_std is None and any(m.fn in (entropy_logit, entropy_layer) for m in chosen):
        feature_std = feature_stats(zm)
    rows = []
    for start in range(0, len(texts), batch_size):
        ids, mask, groups = zm.encode(texts[start:start + batch_size])
        device = next(iter(zm.model.parameters())).device
        ids, mask = ids.to(device), mask.to(device)
        with torch.no_grad():
            target = zm.forward(ids, mask).argmax(-1)
            if ignored is None:  # exact contributions of the linear model's words to the predicted logit
                w = zm.model.head.weight[target]
                contrib = (zm.model.embedding(ids) * w[:, None]).sum(-1) / mask.sum(1, keepdim=True)
        task = Task(zm, ids, mask, target, list(groups), feature_std, seed, {"entropy": dict(entropy_settings or {})}, start)
        for m in chosen:
            for b, s in enumerate(m(task)):
                s = s.numpy()
                row = {"model": zm.name, "method": m.name, "sentence": start + b}
                if ignored is not None:
                    spans = groups[b].spans()
                    off = np.array([bool(ignored[ids[b, span[0]]]) for span in spans])
                    row["read_auc"] = _auc(np.abs(s[~off]), np.abs(s[off]))  # signed methods: by magnitude
                    total = np.abs(s).sum()
                    row["ignored_share"] = float(np.abs(s[off]).sum() / total) if total > 0 else float("nan")
                else:
                    truth = groups[b].aggregate(contrib[b]).numpy()
                    ok = len(s) > 1 and np.ptp(s) > 0
                    row["rho_signed"] = float(spearmanr(s, truth).statistic) if ok else float("nan")
                    row["rho_abs"] = float(spearmanr(s, np.abs(truth)).statistic) if ok else float("nan")
                rows.append(row)
    return pd.DataFrame(rows)


class RedundantEvidence(nn.Module):
    """``3·tanh(logsumexp(2·x_2·v, 2·x_5·v)/2 − 2)`` of a 10-word sentence: words 2 and 5 carry
    the same evidence along ``v``, the output saturates, every other word is ignored."""

    def __init__(self, dims: int = 16):
        super().__init__()
        self.emb = nn.Identity()
        v = torch.randn(dims, generator=torch.Generator().manual_seed(0))
        self.register_buffer("v", v / v.norm())

    def forward(self, x: Tensor) -> Tensor:
        e = 2 * (self.emb(x)[:, [2, 5]] @ self.v.to(x.dtype))
        return 3 * torch.tanh(torch.logsumexp(e, dim=1) / 2 - 2)


def redundant_sentences(model: RedundantEvidence, n: int = 3, seed: int = 1) -> Tensor:
    """(n, 10, dims) inputs: small noise everywhere, ``3·v`` added to words 2 and 5."""
    x = 0.3 * torch.randn(n, 10, model.v.shape[0], generator=torch.Generator().manual_seed(seed))
    x[:, [2, 5]] += 3 * model.v
    return x
