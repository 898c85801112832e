"""The world of one bad-input case (tests/test_bad_inputs.py, test_saved_files.py, test_cache_folder.py).

A case is ``pytest.param(make, expected, regex, id=...)``: ``make(world)`` builds what the case
needs on fresh tiny models (and may ``world.track`` extra ones) and returns ``call``; ``run_case``
snapshots every tracked model, checks that ``call()`` raises the expected error (or emits the
expected warning) with a message matching the regex, which names both the problem and the fix,
and then ``assert_untouched``: every model is as it was (``tests/invariants.py``: weights,
``.grad``, ``requires_grad`` and training flags, no hook of any kind added or removed, none
global either), no hook is on it at all and no ``.grad`` is set.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

from captum_entropy import EntropyAttribution, EntropyResult, FeatureStats

from .invariants import Snapshot, hooks_on, snapshot
from .tiny_models import LinearMap, bert_logits, padded_batch, tiny_bert

FAST = dict(max_steps=5)
P = pytest.param


class World:
    """Fresh tiny models for one case; every tracked model is checked after the case."""

    _base = None

    def __init__(self, tmp: Path) -> None:
        if World._base is None:
            World._base = tiny_bert()
        self.bert = copy.deepcopy(World._base)
        self.bert.bert.pooler.dense.weight.requires_grad_(False)  # a flag that must stay as it is
        self.f = bert_logits(self.bert)
        self.ids, self.mask = padded_batch()
        self.lin = LinearMap(4, 3, 2)
        self.x = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0))
        self.tmp = tmp
        self.models: list[nn.Module] = [self.bert, self.lin]

    def track(self, model: nn.Module) -> nn.Module:
        self.models.append(model)
        return model

    def ea(self, target_layer=None) -> EntropyAttribution:
        return EntropyAttribution(self.f, self.bert.bert.embeddings, target_layer=target_layer)

    def explain(self, **kw):
        kw = {**FAST, **kw}
        ids = kw.pop("ids", self.ids)
        extra = kw.pop("extra", (self.mask,))
        return self.ea(kw.pop("target_layer", None)).attribute_result(ids, additional_forward_args=extra, **kw)

    def explain_lin(self, **kw):
        x = kw.pop("x", self.x)
        return EntropyAttribution(self.lin, self.lin.emb).attribute_result(x, **{**FAST, **kw})

    def result_file(self) -> Path:
        path = self.tmp / "result.safetensors"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.explain_lin(feature_std=torch.ones(2)).save(path)
        return path

    def stats_file(self) -> Path:
        path = self.tmp / "stats.safetensors"
        FeatureStats().fit(self.f, [(self.ids, self.mask)], layers={"l1": self.bert.bert.encoder.layer[0]},
                           mask_index=1).save(path)
        return path

    def checkpoint(self) -> Path:
        from captum_entropy.zoo import build, save_model

        zm = build("cnn", ["a fine film", "a dull film"], glove=False, config=dict(dim=6, filters=4))
        self.track(zm.model)
        return save_model(zm, self.tmp / "cnn.safetensors")


def assert_untouched(before: Snapshot) -> None:
    """The shared check (tests/invariants.py), and on top: no hook at all, no .grad anywhere."""
    before.assert_unchanged()
    assert hooks_on(*before.models) == {}, f"hooks left: {hooks_on(*before.models)}"
    assert all(p.grad is None for m in before.models for p in m.parameters()), ".grad was set"


def run_case(world: World, call: Callable[[], Any], expected: type, match: str) -> None:
    """Run one case: ``call()`` raises (or warns) ``expected`` matching ``match``, and every model is untouched."""
    before = snapshot(*world.models)
    if issubclass(expected, Warning):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("always", expected)
            with pytest.warns(expected, match=match):
                out = call()
        values = out.sigma[out.mask] if isinstance(out, EntropyResult) else out
        assert torch.isfinite(values).all()
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NotComparableWarning etc. are not the point here
            with pytest.raises(expected, match=match):
                call()
    assert_untouched(before)
