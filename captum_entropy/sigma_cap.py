"""The cap on each sentence's noise σ: ``max_sigma=`` when given, else 10 × the embedding table's
std for an ``nn.Embedding``'s output, else 10 × the spread of the sentence's layer values."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._describe import short
from .settings import MAX_SIGMA_FACTOR, Settings


def max_sigma(cfg: Settings, layer: nn.Module, on_input: bool, values3: Tensor, mask: Tensor) -> Tensor:
    batch = values3.shape[0]
    if cfg.max_sigma is not None:
        try:
            cap = torch.as_tensor(cfg.max_sigma, dtype=torch.float32, device=values3.device).expand(batch).clone()
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"max_sigma must be a positive number or a ({batch},) tensor (one cap per sentence), got "
                f"{short(cfg.max_sigma)}"
            ) from None
    elif isinstance(layer, nn.Embedding) and not on_input:
        cap = torch.full((batch,), MAX_SIGMA_FACTOR * float(layer.weight.detach().float().std()), device=values3.device)
    else:
        # 10 × the spread of the sentence's layer values (their root mean square if they are all
        # equal, e.g. a ReLU's output that is all zero but one constant)
        v = values3.float()
        scale = []
        for b in range(batch):
            real = v[b][mask[b]]
            std = real.std(unbiased=False)
            scale.append(std if std > 0 else real.pow(2).mean().sqrt())
        cap = MAX_SIGMA_FACTOR * torch.stack(scale)
        zero = (cap == 0).nonzero().flatten().tolist()
        if zero:
            raise ValueError(
                f"the layer's value is all zeros for sentence(s) {zero[:10]}, so it gives no scale for the default "
                "cap on σ (10 × the std of the sentence's layer values): pass max_sigma="
            )
    if not (torch.isfinite(cap).all() and (cap > 0).all()):
        raise ValueError(
            f"max_sigma must be finite and positive, got {cap.tolist()[:10]}: pass a positive number (the largest "
            "noise std, in the layer's units), or leave it None for the default cap"
        )
    return cap
