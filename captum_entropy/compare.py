"""Deprecated module path: the comparison lives in :mod:`captum_entropy.comparison`.

``captum_entropy.compare`` is the function :func:`captum_entropy.comparison.compare`; importing
names from this module still works, with a ``DeprecationWarning`` naming the new module.
"""

from ._deprecated import moved_module

moved_module(__name__, "captum_entropy.comparison", "captum_entropy.comparison:compare")
