"""Closed forms: differential entropy of Gaussian noise, units, linearised optima.

Pure tensor functions, no model. Entropies are in nats unless a name says bits.

>>> import torch
>>> h = entropy_from_sigma(torch.tensor([1.0]))
>>> round(float(h), 4)  # ½·log(2πe)
1.4189
>>> float(sigma_from_entropy(h))
1.0
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

HALF_LOG_2PI_E = 0.5 * math.log(2.0 * math.pi * math.e)
NATS_PER_BIT = math.log(2.0)


def entropy_from_sigma(sigma: Tensor) -> Tensor:
    """Differential entropy ½·log(2πe·σ²) of one Gaussian dimension with std ``sigma`` (nats)."""
    return HALF_LOG_2PI_E + torch.log(sigma)


def sigma_from_entropy(entropy: Tensor) -> Tensor:
    """Inverse of :func:`entropy_from_sigma`."""
    return torch.exp(entropy - HALF_LOG_2PI_E)


def nats_to_bits(nats: Tensor | float) -> Tensor | float:
    """Convert nats to bits."""
    return nats / NATS_PER_BIT


def bits_to_nats(bits: Tensor | float) -> Tensor | float:
    """Convert bits to nats."""
    return bits * NATS_PER_BIT


def linear_optimal_sigma(
    jacobian_sq_norm: Tensor, entropy_weight: Tensor | float, n_dims: int = 1
) -> Tensor:
    """Minimiser of ``σ²·‖J‖² − c·log σ / n_dims`` for each entry: ``σ = sqrt(c / (2·n_dims·‖J‖²))``.

    This is the optimum of the (linearised) loss used by :mod:`captum_entropy.optim`:
    ``E‖f(x + σ⊙ε) − f(x)‖² ≈ Σ σ²·‖J‖²`` minus ``c`` times the mean log-σ of a word.

    * one σ per token: ``jacobian_sq_norm`` is ``‖J_i‖²_F`` (summed over the word's
      ``K`` dimensions) and ``n_dims=1``;
    * one σ per element: ``jacobian_sq_norm`` is the column norm ``‖J_ik‖²`` and
      ``n_dims=K``.

    Entries with a zero Jacobian get ``inf`` (the word is not read at all).

    >>> s = linear_optimal_sigma(torch.tensor([4.0]), 0.5)
    >>> float(s)
    0.25
    """
    c = torch.as_tensor(entropy_weight, dtype=jacobian_sq_norm.dtype, device=jacobian_sq_norm.device)
    return torch.sqrt(c / (2.0 * n_dims * jacobian_sq_norm))


def entropy_to_importance(
    token_entropy: Tensor, max_entropy: Tensor | float | None = None, normalize: bool = True
) -> Tensor:
    """Turn word entropies (low = kept) into importances (high = kept) for ``visualize_text``.

    ``importance = max_entropy − H``: the information a word keeps relative to a word that is
    fully forgotten (``max_entropy``, the entropy at the σ cap; default: each row's largest
    finite entropy). With ``normalize`` each row is divided by its largest value, giving [0, 1].
    NaN (padding) stays NaN.

    >>> entropy_to_importance(torch.tensor([[1.0, 3.0, 2.0]]))
    tensor([[1.0000, 0.0000, 0.5000]])
    """
    h = token_entropy
    if max_entropy is None:
        ref = torch.nan_to_num(h, nan=-math.inf).amax(dim=-1, keepdim=True)
    else:
        ref = torch.as_tensor(max_entropy, dtype=h.dtype, device=h.device)
        if ref.dim() == 1 and h.dim() == 2:
            ref = ref[:, None]
    imp = ref - h
    if normalize:
        top = torch.nan_to_num(imp, nan=-math.inf).amax(dim=-1, keepdim=True)
        imp = imp / torch.where(top > 0, top, torch.ones_like(top))
    return imp
