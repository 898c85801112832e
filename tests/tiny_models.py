"""Tiny models built from configs, shared by the tests."""

from __future__ import annotations

import torch
from torch import nn

WEIGHTS = torch.tensor([10.0, 20.0, 5.0, -20.0, -10.0])  # METHOD.md's linear toy


class LinearToy(nn.Module):
    """Φ(x) = Σ_i w_i x_i with noise on ``self.emb`` (an identity), as in METHOD.md."""

    def __init__(self, weights: torch.Tensor = WEIGHTS) -> None:
        super().__init__()
        self.emb = nn.Identity()
        self.register_buffer("w", weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.w[None, :, None] * self.emb(x)).sum(1)


class LinearMap(nn.Module):
    """A random linear feature of all tokens: (B, T, K) -> flatten -> (B, C)."""

    def __init__(self, tokens: int, dims: int, out: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = nn.Identity()
        self.register_buffer("A", torch.randn(out, tokens * dims, generator=g) / (tokens * dims) ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.emb(x).flatten(1) @ self.A.T


def tiny_bert(seed: int = 0, layers: int = 2, dropout: float = 0.1):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=60, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=32, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    )
    return BertForSequenceClassification(cfg).eval()


def bert_logits(model):
    return lambda ids, am: model(input_ids=ids, attention_mask=am).logits


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (4 sentences, 9 positions, two of them padded) and their attention mask."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 60, (4, 9), generator=g)
    ids[:, 0] = 2  # [CLS]-like
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[3, 4:] = 0
    ids[mask == 0] = 0
    return ids, mask
