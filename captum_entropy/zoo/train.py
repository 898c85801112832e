"""Deprecated module path: the training loops live in :mod:`captum_entropy.zoo.training`.

``captum_entropy.zoo.train`` is the function :func:`captum_entropy.zoo.registry.train`; importing
names from this module still works, with a ``DeprecationWarning`` naming the new module.
"""

from .._deprecated import moved_module

moved_module(__name__, "captum_entropy.zoo.training", "captum_entropy.zoo.registry:train")
