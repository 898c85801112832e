"""captum_entropy: how much of each word a layer keeps (Guan et al., ICML 2019), for Captum."""

import importlib

from ._deprecated import moved_module

# Exports load on first use (PEP 562): `import captum_entropy` and `captum-entropy --help` do not
# import torch; `from captum_entropy import EntropyAttribution` works as usual.
_EXPORTS = {
    "ConvergenceWarning": "attr",
    "EntropyAttribution": "attr",
    "NotComparableWarning": "attr",
    "Settings": "attr",
    "bits_to_nats": "entropy",
    "entropy_from_sigma": "entropy",
    "entropy_to_importance": "entropy",
    "linear_optimal_sigma": "entropy",
    "nats_to_bits": "entropy",
    "sigma_from_entropy": "entropy",
    "OptimSettings": "optim_settings",
    "EntropyResult": "result",
    "Explainer": "explainer",
    "ModelComparison": "comparison",
    "compare": "comparison",
    "compare_models": "comparison",
    "LayerExplanation": "analysis",
    "explain": "explainer",
    "explain_layers": "layerwise",
    "FeatureStats": "stats",
    "TinyStdWarning": "stats",
    "RunResults": "runs",
    "run_dataset": "runs",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__version__ = "0.2.1"

# the module comparison.py was compare.py: that path still imports, with a warning (see _deprecated)
moved_module(f"{__name__}.compare", f"{__name__}.comparison", f"{__name__}.comparison:compare")

__all__ = [
    "ConvergenceWarning",
    "EntropyAttribution",
    "EntropyResult",
    "Explainer",
    "FeatureStats",
    "LayerExplanation",
    "ModelComparison",
    "NotComparableWarning",
    "OptimSettings",
    "RunResults",
    "Settings",
    "TinyStdWarning",
    "bits_to_nats",
    "compare",
    "compare_models",
    "entropy_from_sigma",
    "entropy_to_importance",
    "explain",
    "explain_layers",
    "linear_optimal_sigma",
    "nats_to_bits",
    "run_dataset",
    "sigma_from_entropy",
]
