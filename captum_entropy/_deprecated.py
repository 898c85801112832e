"""Old spellings that still work, with a ``DeprecationWarning`` naming the new one: renamed
attributes and methods (:func:`renamed`), and old module paths that are now functions of the same
name (:func:`moved_module`: one object that is both).

``captum_entropy.compare`` is the function that explains texts with several models and compares
them; the module that defines it is :mod:`captum_entropy.comparison`. Before, the module was also
called ``compare``, so ``captum_entropy.compare`` was the function or the module depending on what
had been imported first. The old module path stays importable (with a ``DeprecationWarning`` that
names the new one) and, whichever way it is reached, ``captum_entropy.compare(...)`` calls the
function. The same for ``captum_entropy.zoo.train`` (the module is now
:mod:`captum_entropy.zoo.training`).
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from typing import Any


class _MovedModule(types.ModuleType):
    """A module kept only for its old import path: calling it calls the function it is named after;
    its other attributes come from the new module, with a warning."""

    _new: str
    _function: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module, name = self._function.rsplit(":", 1)
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        new = importlib.import_module(self._new)
        if name.startswith("__") or not hasattr(new, name):  # tools probing for attributes: no warning
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        warnings.warn(f"the module {self.__name__} moved to {self._new}: import {name} from {self._new}",
                      DeprecationWarning, stacklevel=2)
        return getattr(new, name)


def moved_module(old: str, new: str, function: str) -> None:
    """Turn the module ``old`` (being imported) into the stand-in for ``new``; ``function`` is
    ``"module:name"`` of what calling it runs."""
    module = sys.modules[old]
    module.__class__ = _MovedModule
    module._new = new
    module._function = function


def renamed_keyword(function: str, old: str, new: str, old_value: Any, new_value: Any) -> Any:
    """The value of keyword ``new``, taking ``old_value`` (with a warning) when the caller used
    the old keyword ``old`` (a value other than ``None``)."""
    if old_value is None:
        return new_value
    renamed(f"{function}({old}=...)", f"{function}({new}=...)", stacklevel=4)
    return old_value


def renamed(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that ``old`` is now spelt ``new`` (call it from the old spelling's body)."""
    warnings.warn(f"{old} is renamed {new}; the old name will go in a later release", DeprecationWarning,
                  stacklevel=stacklevel)
