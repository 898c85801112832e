"""The shared "model untouched, no hook left" check (tests/invariants.py) catches every kind of touch."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

from .invariants import hooks_on, same_tensor, snapshot


def _model() -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)).eval()
    model[2].weight.grad = torch.ones_like(model[2].weight)
    with torch.no_grad():
        model[0].bias[1] = float("nan")  # NaN where there was NaN is unchanged
    return model


def _nothing(model: nn.Module) -> None:
    with torch.no_grad():
        model[0].weight.mul_(1.0)  # rewrites the same values
    model(torch.randn(4, 3))


def _global_hook(model: nn.Module) -> None:
    nn.modules.module.register_module_forward_hook(lambda *a: None)


TOUCHES: dict[str, Callable[[nn.Module], object]] = {
    "a weight changed": lambda m: m[0].weight.data.add_(1e-7),
    "a NaN weight became 0": lambda m: m[0].bias.data.nan_to_num_(0.0),
    "a weight's dtype changed": lambda m: m[0].to(torch.float64),
    "a parameter replaced by an equal one": lambda m: setattr(m[0], "weight", nn.Parameter(m[0].weight.detach().clone())),
    "a buffer changed": lambda m: m[1].running_mean.add_(1.0),
    "a .grad set": lambda m: setattr(m[0].weight, "grad", torch.zeros_like(m[0].weight)),
    "a .grad cleared": lambda m: setattr(m[2].weight, "grad", None),
    "a .grad changed": lambda m: m[2].weight.grad.mul_(2),
    "requires_grad changed": lambda m: m[0].bias.requires_grad_(False),
    "a training flag changed": lambda m: m[1].train(),
    "a module replaced": lambda m: m.__setitem__(1, nn.Identity()),
    "a forward hook left": lambda m: m[0].register_forward_hook(lambda *a: None),
    "a forward hook with kwargs left": lambda m: m[0].register_forward_hook(lambda *a: None, with_kwargs=True),
    "a forward-pre hook left": lambda m: m[2].register_forward_pre_hook(lambda *a: None),
    "a full backward hook left": lambda m: m[0].register_full_backward_hook(lambda *a: None),
    "a backward-pre hook left": lambda m: m[0].register_full_backward_pre_hook(lambda *a: None),
    "a state-dict hook left": lambda m: m._register_state_dict_hook(lambda *a: None),
    "a tensor hook on a parameter left": lambda m: m[0].weight.register_hook(lambda g: g),
    "a global module hook left": _global_hook,
}


def test_an_untouched_model_passes():
    model = _model()
    before = snapshot(model)
    _nothing(model)
    before.assert_unchanged()
    assert before.differences() == []


@pytest.mark.parametrize("touch", list(TOUCHES))
def test_every_kind_of_touch_is_caught(touch):
    model, other = _model(), _model()
    before = snapshot(other, model)
    globals_before = dict(nn.modules.module._global_forward_hooks)
    try:
        TOUCHES[touch](model)
        with pytest.raises(AssertionError, match="model 1|global"):
            before.assert_unchanged()
    finally:
        for key in set(nn.modules.module._global_forward_hooks) - set(globals_before):
            del nn.modules.module._global_forward_hooks[key]


def test_a_removed_hook_is_caught_and_hooks_on_lists_them():
    model = _model()
    handle = model[0].register_forward_hook(lambda *a: None)
    assert hooks_on(model) == {"model0.0._forward_hooks": 1}
    before = snapshot(model)
    handle.remove()
    with pytest.raises(AssertionError, match=r"0\._forward_hooks held 1 hook\(s\), now 0"):
        before.assert_unchanged()
    assert hooks_on(model) == {}


def test_same_tensor_is_exact():
    a = torch.tensor([1.0, float("nan"), float("inf")])
    assert same_tensor(a, a.clone()) and same_tensor(None, None)
    assert not same_tensor(a, a.double()) and not same_tensor(a, None)
    assert not same_tensor(a, torch.tensor([1.0, float("nan"), torch.finfo(torch.float32).max]))
    assert not same_tensor(a, torch.tensor([1.0, 0.0, float("inf")]))
