"""Which positions are real tokens: the padding mask, given (``mask=``, ``pad_token_id=``) or an
attention mask detected among the inputs and kept only if the model ignores what it marks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .settings import Settings


def token_mask(
    cfg: Settings, args: tuple[Tensor, ...], extra: tuple, values3: Tensor, verify: Callable[[Tensor], bool]
) -> tuple[Tensor, str]:
    """The (B, T) mask of real tokens and where it came from.

    ``mask=`` or ``pad_token_id=`` when given; otherwise an attention mask found among the other
    inputs and ``additional_forward_args`` (Captum's habit: it travels with the inputs, so wrappers
    that repeat the batch keep it aligned), accepted only if ``verify`` shows that the model
    ignores the positions it marks as padding. Without one, every position is a real token.
    """
    batch, tokens = values3.shape[:2]
    if cfg.mask is not None:
        mask = torch.as_tensor(cfg.mask, device=values3.device)
        if mask.dim() == 2 and mask.shape[1] == tokens and mask.shape[0] != batch and batch % mask.shape[0] == 0:
            raise ValueError(
                f"mask has {mask.shape[0]} rows but the inputs {batch}: a wrapper (NoiseTunnel, sensitivity_max, "
                "...) repeated the batch and cannot repeat mask= with it; pass the attention mask in "
                "additional_forward_args instead (it is detected there and travels with the inputs)"
            )
        if mask.shape != (batch, tokens):
            raise ValueError(f"mask has shape {tuple(mask.shape)}; expected (batch, tokens) = {(batch, tokens)}")
        if mask.is_complex() or not ((mask == 0) | (mask == 1)).all():
            odd = sorted({float(v) for v in mask[(mask != 0) & (mask != 1)].flatten()[:5].tolist()})
            raise ValueError(
                f"mask must hold 0/1 (or booleans), but it has values such as {odd}: pass the attention mask "
                "(1 = real token, 0 = padding), not the token ids or a float weighting"
            )
        mask, source = mask.bool(), "mask"
    elif cfg.pad_token_id is not None:
        if args[0].shape[:2] != (batch, tokens) or args[0].is_floating_point():
            raise ValueError("pad_token_id needs inputs[0] to be token ids of shape (batch, tokens); pass mask instead")
        mask, source = (args[0] != cfg.pad_token_id).to(values3.device), "pad_token_id"
    else:
        mask, source = torch.ones((batch, tokens), dtype=torch.bool, device=values3.device), "none"
        for where, candidate in _mask_candidates(args, extra, batch, tokens):
            empty = (~candidate.any(1)).nonzero().flatten().tolist()
            probe = candidate.clone()
            probe[empty] = True  # verify on the other rows; an all-padding row is an error below
            if probe.all():
                continue
            if verify(probe.to(values3.device)):
                if empty:
                    raise ValueError(
                        f"sentence(s) {empty[:10]} are all padding ({where}, the attention mask, is 0 on every "
                        "position): remove them from the batch"
                    )
                mask, source = candidate.to(values3.device), f"detected: {where}"
                break
    empty = (~mask.any(1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"sentence(s) {empty[:10]} are all padding; remove them from the batch")
    return mask, source


def _mask_candidates(args: tuple[Tensor, ...], extra: tuple, batch: int, tokens: int) -> list[tuple[str, Tensor]]:
    """Tensors that look like an attention mask: (batch, tokens), 0/1, padding at one end of every row.

    A keyword named ``attention_mask`` (in a dict of ``additional_forward_args``) comes first.
    """
    found: list[tuple[int, str, Tensor]] = []
    named = [(f"inputs[{i}]", a) for i, a in enumerate(args) if i > 0]
    for i, a in enumerate(extra):
        if isinstance(a, Mapping):
            named += [(f"additional_forward_args[{i}][{k!r}]", v) for k, v in a.items()]
        else:
            named.append((f"additional_forward_args[{i}]", a))
    for where, t in named:
        if not isinstance(t, Tensor) or t.shape != (batch, tokens) or t.is_complex():
            continue
        m = t.detach()
        if not ((m == 0) | (m == 1)).all():
            continue
        m = m.bool()
        if m.all() or not m.any():
            continue
        right = (m[:, :-1] >= m[:, 1:]).all()  # ones, then padding
        left = (m[:, :-1] <= m[:, 1:]).all()  # padding, then ones
        if right or left:
            found.append((0 if "attention_mask" in where else 1, where, m))
    return [(w, m) for _, w, m in sorted(found, key=lambda x: x[0])]
