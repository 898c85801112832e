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
import warnings

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
    jacobian_sq_norm: Tensor, tolerance: float | None = None, entropy_weight: float | None = None
) -> Tensor:
    """Optimal σ of the linearised problem ``D = Σ_p σ_p²·a_p`` for one sentence, no cap.

    ``jacobian_sq_norm`` holds ``a_p = ‖Ĵ_p‖²`` for the sentence's P parameters (one per word:
    the Jacobian norm summed over the word's dimensions; or one per element), where ``Ĵ`` is the
    Jacobian of the normalised feature ``Φ/(σ_S·√M)`` (M feature elements).

    * constrained (``tolerance`` τ, the default objective): maximise ``Σ_p log σ_p`` subject
      to ``D ≤ τ``: ``σ_p² = τ / (P·a_p)``, every parameter spends ``τ/P`` of the budget;
    * penalised (``entropy_weight`` λ, the authors'): minimise ``D − λ·mean_p log σ_p``:
      ``σ_p² = λ / (2·P·a_p)``, the same as ``tolerance = λ/2``.

    :func:`captum_entropy.objective.linear_solution` adds the cap (words it passes are capped and
    the others share their unused budget). Entries with ``a_p = 0`` get ``inf``.

    >>> linear_optimal_sigma(torch.tensor([4.0, 1.0]), tolerance=0.5)
    tensor([0.2500, 0.5000])
    """
    if (tolerance is None) == (entropy_weight is None):
        raise ValueError("give exactly one of tolerance and entropy_weight")
    per_param = tolerance if tolerance is not None else entropy_weight / 2
    return torch.sqrt(per_param / (jacobian_sq_norm.numel() * jacobian_sq_norm))


def entropy_to_importance(
    token_entropy: Tensor, max_entropy: Tensor | float | None = None, normalize: bool = True
) -> Tensor:
    """Turn word entropies (low = kept) into importances (high = kept) for ``visualize_text``.

    ``importance = max_entropy − H``: the information a word keeps, measured (as everywhere in
    the package, :meth:`EntropyResult.importance` included) from a word that is fully forgotten,
    ``max_entropy`` = the entropy at the σ cap (:attr:`EntropyResult.max_token_entropy`). With
    ``normalize`` each row is divided by its largest value, giving [0, 1]. NaN (padding) stays NaN.
    Without ``max_entropy`` (deprecated) the reference is each row's largest finite entropy.

    >>> entropy_to_importance(torch.tensor([[1.0, 3.0, 2.0]]), max_entropy=4.0)
    tensor([[1.0000, 0.3333, 0.6667]])
    """
    if max_entropy is None:
        warnings.warn(
            "entropy_to_importance without max_entropy measures from each row's largest entropy, not from the "
            "σ cap as EntropyResult.importance() does; pass max_entropy=result.max_token_entropy (a later "
            "release will require it)", DeprecationWarning, stacklevel=2)
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
