"""Hooks as context managers: replace or capture a module's output or input, stop a forward.

Every hook is removed in ``finally``, so none can leak, also when the forward raises.

>>> import torch
>>> lin = torch.nn.Linear(2, 2)
>>> store = {}
>>> with capture(lin, store, "out"):
...     _ = lin(torch.zeros(1, 2))
>>> store["out"].shape
torch.Size([1, 2])
>>> len(lin._forward_hooks)
0
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Hashable, Iterator, Mapping

from torch import Tensor, nn


class StopForward(Exception):
    """Raised by a capture hook to end a forward pass once the deepest needed layer has run."""


def first_tensor(value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    if hasattr(value, "to_tuple"):  # Hugging Face ModelOutput
        return first_tensor(value.to_tuple())
    raise TypeError(
        f"expected the module to produce a tensor (or a tuple starting with one), got {type(value).__name__}"
    )


def _replace_first(value: Any, new: Tensor) -> Any:
    if isinstance(value, Tensor):
        return new
    if isinstance(value, tuple):
        return (new, *value[1:])
    if isinstance(value, list):
        return [new, *value[1:]]
    raise TypeError(f"cannot replace the output of type {type(value).__name__}")


def _first_input(args: tuple, kwargs: dict) -> tuple[Tensor, Callable[[Tensor], tuple[tuple, dict]]]:
    """The module's first tensor argument (positional, else keyword) and a function putting a new one there."""
    if args and isinstance(args[0], Tensor):
        return args[0], lambda new: ((new, *args[1:]), kwargs)
    for key, val in kwargs.items():
        if isinstance(val, Tensor) and val.is_floating_point():
            return val, lambda new, key=key: (args, {**kwargs, key: new})
    raise TypeError(
        "the module was called without a floating-point tensor argument, so its input cannot be "
        "perturbed; use attribute_to_layer_input=False or choose another layer"
    )


@contextlib.contextmanager
def replace(
    module: nn.Module, fn: Callable[[Tensor], Tensor], on_input: bool = False
) -> Iterator[None]:
    """Within the block, ``module``'s output (or first input) ``v`` is replaced by ``fn(v)``.

    ``on_input=True`` works for modules called with keyword arguments (as Hugging Face
    models call theirs): the first positional tensor, else the first floating-point keyword
    tensor, is replaced.
    """
    if on_input:

        def pre_hook(_mod: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            value, put = _first_input(args, kwargs)
            return put(fn(value))

        handle = module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:

        def hook(_mod: nn.Module, _args: tuple, output: Any) -> Any:
            return _replace_first(output, fn(first_tensor(output)))

        handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def capture(
    module: nn.Module, store: dict, key: Any, on_input: bool = False, stop: bool = False
) -> contextlib.AbstractContextManager[None]:
    """Within the block, store ``module``'s output (or first input) in ``store[key]``.

    Only the first call of the module per forward is kept. With ``stop=True`` the forward is
    ended right after the capture by raising :class:`StopForward` (catch it with
    :func:`stoppable`).
    """
    return capture_all({key: (module, on_input)}, store, stop=stop)


@contextlib.contextmanager
def capture_all(
    modules: Mapping[Hashable, tuple[nn.Module, bool]], store: dict, stop: bool = False
) -> Iterator[None]:
    """Capture several modules at once: ``modules[key] = (module, on_input)`` -> ``store[key]``.

    ``store`` keeps the order in which the modules ran. With ``stop=True`` the forward ends
    (:class:`StopForward`) as soon as every module has been captured.
    """

    def keep(key: Hashable, value: Tensor) -> None:
        if key not in store:
            # a copy (differentiable): an in-place module later in the forward must not overwrite it
            store[key] = value.clone()
        if stop and len(store) >= len(modules) and all(k in store for k in modules):
            raise StopForward

    handles = []
    try:
        for key, (module, on_input) in modules.items():
            if on_input:
                handles.append(module.register_forward_pre_hook(
                    lambda _m, args, kwargs, key=key: keep(key, _first_input(args, kwargs)[0]), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(
                    lambda _m, _args, out, key=key: keep(key, first_tensor(out))))
        yield
    finally:
        for handle in handles:
            handle.remove()


def stoppable(fn: Callable[[], Any]) -> Any:
    """Call ``fn()``; a :class:`StopForward` raised inside ends it early and returns ``None``."""
    try:
        return fn()
    except StopForward:
        return None


@contextlib.contextmanager
def no_dropout() -> Iterator[None]:
    """Within the block every module runs with ``training=False``; flags are restored afterwards.

    A global forward pre-hook switches each module off training right before it runs, so this
    works for any ``forward_func`` (a module, a bound method or a closure) without knowing the
    model. Only modules that actually run are touched, and each is restored in ``finally``.
    """
    switched: list[nn.Module] = []

    def pre_hook(module: nn.Module, _args: tuple) -> None:
        if module.training:
            module.training = False
            switched.append(module)

    handle = nn.modules.module.register_module_forward_pre_hook(pre_hook)
    try:
        yield
    finally:
        handle.remove()
        for module in switched:
            module.training = True


@contextlib.contextmanager
def on_module_start(fn: Callable[[nn.Module, tuple], None]) -> Iterator[None]:
    """Within the block ``fn(module, args)`` runs right before every module's forward (a global
    forward pre-hook, removed in ``finally``). It may raise, e.g. :class:`StopForward`."""
    handle = nn.modules.module.register_module_forward_pre_hook(lambda module, args: fn(module, args))
    try:
        yield
    finally:
        handle.remove()


__all__ = [
    "StopForward", "capture", "capture_all", "first_tensor", "replace", "stoppable", "no_dropout", "on_module_start",
]
