"""Old spellings that still work, with a ``DeprecationWarning`` naming the new one: renamed
attributes, keywords and constructor keywords (:func:`renamed`, :func:`renamed_keyword`,
:func:`renamed_init_keyword`), and old module paths whose name
is now only a function's (:func:`moved_module`).

``captum_entropy.compare`` is the function that explains texts with several models and compares
them; the module that defines it is :mod:`captum_entropy.comparison`. Before, the module was also
called ``compare``, so ``captum_entropy.compare`` was the function or the module depending on what
had been imported first. Now there is no file ``compare.py``: the old path is a stand-in registered
in ``sys.modules`` (no attribute of the package), so ``captum_entropy.compare`` is always the
function, and ``from captum_entropy.compare import compare_models`` still works with a warning
that names the new module. The same for ``captum_entropy.zoo.train`` (the module is now
:mod:`captum_entropy.zoo.training`; ``zoo.train`` is the function that trains a zoo model).
"""

from __future__ import annotations

import functools
import importlib
import sys
import types
import warnings
from typing import Any, Callable


class _MovedModule(types.ModuleType):
    """A module kept only for its old import path: its attributes come from the new module, with
    a warning; calling it calls the function it is named after."""

    def __init__(self, old: str, new: str, function: str) -> None:
        super().__init__(old, f"Deprecated module path: use {new}.")
        self._new, self._function = new, function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module, name = self._function.rsplit(":", 1)
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # tools probing for attributes (and our own fields while unset): no warning
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        new = importlib.import_module(self._new)
        if not hasattr(new, name):
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        warnings.warn(f"the module {self.__name__} moved to {self._new}: import {name} from {self._new}",
                      DeprecationWarning, stacklevel=2)
        return getattr(new, name)


def moved_module(old: str, new: str, function: str) -> None:
    """Register a stand-in for the module path ``old`` (now ``new``) in ``sys.modules``, without
    making it an attribute of its package (so the package's function of that name stays what the
    name means); ``function`` (``"module:name"``) is what calling the stand-in runs."""
    sys.modules.setdefault(old, _MovedModule(old, new, function))


def renamed_keyword(function: str, old: str, new: str, old_value: Any, new_value: Any) -> Any:
    """The value of keyword ``new``, taking ``old_value`` (with a warning) when the caller used
    the old keyword ``old`` (a value other than ``None``)."""
    if old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f"{function}() got both {old}= and {new}=: {old} is the old name of {new}; pass {new}= only")
    renamed(f"{function}({old}=...)", f"{function}({new}=...)", stacklevel=4)
    return old_value


def renamed_init_keyword(old: str, new: str) -> Callable[[type], type]:
    """Class decorator (above ``@dataclass``): ``cls(old=...)`` keeps working now that the field
    ``old`` is ``new``, with a warning."""

    def decorate(cls: type) -> type:
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"{cls.__name__}() got both {old}= and {new}=: pass {new}= only")
                renamed(f"{cls.__name__}({old}=...)", f"{cls.__name__}({new}=...)")
                kwargs[new] = kwargs.pop(old)
            init(self, *args, **kwargs)

        cls.__init__ = __init__
        return cls

    return decorate


def renamed(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that ``old`` is now spelt ``new`` (call it from the old spelling's body)."""
    warnings.warn(f"{old} is renamed {new}; the old name will go in a later release", DeprecationWarning,
                  stacklevel=stacklevel)
