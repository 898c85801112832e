"""Checks of the clean forward pass: clear errors for inputs the model cannot take.

:class:`IdsWatch` runs before every module of a forward (token ids in range and integer; also in
:meth:`FeatureStats.fit`); :class:`CleanWatch`, for the one clean forward, also counts the calls of
the layer and of every target, and says where to stop;
:func:`explain_failure` turns a forward that failed inside the model into an error that names the
cause and the fix (too many tokens, autocast on a half-precision model, integer embeddings, a
tensor with another batch size).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from .hooks import StopForward


def named_tensors(args: tuple, extra: tuple) -> list[tuple[str, Tensor]]:
    named = [(f"inputs[{i}]", a) for i, a in enumerate(args)]
    for i, a in enumerate(extra):
        if isinstance(a, Mapping):
            named += [(f"additional_forward_args[{i}][{k!r}]", v) for k, v in a.items()]
        else:
            named.append((f"additional_forward_args[{i}]", a))
    return [(w, t) for w, t in named if isinstance(t, Tensor)]


def ours(err: Exception) -> Exception:
    """Mark an error raised from a hook inside the model as already explained."""
    err._captum_entropy = True  # type: ignore[attr-defined]
    return err


def too_long(tokens: int, limit: int, what: str) -> str:
    return (
        f"the inputs have {tokens} tokens but the model accepts at most {limit} ({what}): truncate them to "
        f"{limit} tokens (e.g. tokenizer(texts, truncation=True, max_length={limit})) or split long texts"
    )


class IdsWatch:
    """Runs before every module of a forward: the token ids of every ``nn.Embedding`` are integer and
    in range (checked before the lookup, so a GPU never hits a device-side assert). Used by the clean
    pass (:class:`CleanWatch`) and by :meth:`FeatureStats.fit`."""

    def __init__(self, tokens: int | None) -> None:
        self.tokens = tokens
        self.started: dict[int, nn.Module] = {}
        self._names: dict[int, str] | None = None

    def name(self, module: nn.Module) -> str:
        if self._names is None:  # the first module that ran is the outermost one (usually the model)
            root = next(iter(self.started.values()), None)
            self._names = {id(m): n for n, m in root.named_modules()} if root is not None else {}
        name = self._names.get(id(module))
        return f"{name} ({type(module).__name__})" if name else type(module).__name__

    def __call__(self, module: nn.Module, args: tuple) -> None:
        self.started.setdefault(id(module), module)
        if isinstance(module, nn.Embedding):
            self._check_ids(module, args)

    def _check_ids(self, module: nn.Embedding, args: tuple) -> None:
        if not args or not isinstance(args[0], Tensor):
            return
        ids = args[0]
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ours(TypeError(
                f"{self.name(module)} is an nn.Embedding and got a {str(ids.dtype).removeprefix('torch.')} tensor, "
                "but it looks up integer token ids: pass the ids as a torch.long tensor (integer and float inputs "
                "mixed up? float tensors such as the attention mask go in additional_forward_args)"
            ))
        if ids.numel() == 0:
            return
        lo, hi, rows = int(ids.min()), int(ids.max()), module.num_embeddings
        if lo >= 0 and hi < rows:
            return
        name = self.name(module)
        if "position" in name and lo >= 0 and self.tokens is not None:
            limit = self.tokens - (hi + 1 - rows)
            raise ours(ValueError(too_long(self.tokens, limit, f"{name} has {rows} rows")))
        raise ours(ValueError(
            f"token ids from {lo} to {hi} go into {name}, an nn.Embedding with {rows} rows that needs ids in "
            f"[0, {rows}): the ids come from another tokenizer or vocabulary, or padding such as -100 was left in; "
            "encode the inputs with the model's own tokenizer (and pad with its pad_token_id)"
        ))

    def length_limits(self) -> list[tuple[str, int]]:
        """(what, most tokens) for every module that ran and states a position limit."""
        found = []
        for m in self.started.values():
            mpe = getattr(getattr(m, "config", None), "max_position_embeddings", None)
            if isinstance(mpe, int) and not isinstance(mpe, bool):
                found.append((f"{self.name(m)}: config.max_position_embeddings = {mpe}", mpe))
            pos = getattr(m, "position_embeddings", None)
            if isinstance(pos, nn.Embedding):
                found.append((f"{self.name(pos)} has {pos.num_embeddings} rows", pos.num_embeddings))
        return sorted(found, key=lambda x: x[1])

    def length_error(self, ids: Any) -> ValueError | None:
        """For a forward that failed: the error if ``ids`` has more tokens than a module that ran accepts."""
        if not isinstance(ids, Tensor) or ids.dim() < 2:
            return None
        for what, limit in self.length_limits():
            if ids.shape[1] > limit:
                return ValueError(too_long(ids.shape[1], limit, what))
        return None


class CleanWatch(IdsWatch):
    """Runs before every module of the clean forward pass (see :meth:`ModelRunner.clean`).

    Besides the token ids it counts the calls of ``layer`` and of every target. With ``stop`` (the
    model output is not needed) it ends the forward at the first module that starts after every
    target has run and holds none, before that module runs (as the noisy passes end there too, a
    call of ``layer`` there is harmless and not counted). A target called again up to there is
    caught; a later call is not seen (docs/reliability.md, "Known limits").
    """

    def __init__(
        self, layer: nn.Module, targets: list, want: dict, store: dict, stop: bool, tokens: int | None
    ) -> None:
        super().__init__(tokens)
        self.layer, self.want, self.store, self.stop = layer, want, store, stop
        self.targets = [m for m in targets if m is not None]
        self.target_calls: dict[int, int] = {}
        self.layer_calls = 0
        self._contains: dict[int, bool] = {}

    def __call__(self, module: nn.Module, args: tuple) -> None:
        key = id(module)
        if self.stop and all(k in self.store for k in self.want) and not self._holds_target(module):
            raise StopForward  # every target has run and the forward has moved on
        super().__call__(module, args)
        if module is self.layer:
            self.layer_calls += 1
        if any(module is t for t in self.targets):
            self.target_calls[key] = self.target_calls.get(key, 0) + 1
            if self.target_calls[key] > 1:
                raise StopForward  # ModelRunner.clean raises the error

    def _holds_target(self, module: nn.Module) -> bool:
        key = id(module)
        if key not in self._contains:
            self._contains[key] = any(m is t for m in module.modules() for t in self.targets)
        return self._contains[key]


def explain_failure(run: Any, watch: CleanWatch, store: dict) -> Exception | None:
    """A clear error for a forward that failed inside the model, where the cause is recognised."""
    ids = run.args[0]
    long = watch.length_error(ids)
    if long is not None:
        return long
    if run.amp:
        half = sorted({str(p.dtype).removeprefix("torch.") for m in watch.started.values()
                       for p in m.parameters(recurse=False) if p.dtype in (torch.float16, torch.bfloat16)})
        if half:
            return ValueError(
                f"amp=True runs the forward under torch.autocast, but the model already has {'/'.join(half)} "
                "weights, which autocast cannot mix with on this device: leave amp=False for a half-precision "
                "model (or load it in float32 to use amp)"
            )
    if "layer" in store and not store["layer"].is_floating_point():
        return TypeError(run.not_float(store["layer"].dtype))
    for where, t in named_tensors(run.args, run.extra):
        if t.dim() >= 1 and t.shape[0] != run.batch and t.dim() == ids.dim() and t.shape[1:] == ids.shape[1:]:
            return ValueError(
                f"{where} has {t.shape[0]} rows but inputs[0] has {run.batch}: every tensor that goes with the "
                "sentences (the attention mask, token_type_ids, ...) needs one row per sentence, in the same order"
            )
    return None
