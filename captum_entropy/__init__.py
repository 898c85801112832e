"""captum_entropy: how much of each word a layer keeps (Guan et al., ICML 2019), for Captum."""

from .attr import ConvergenceWarning, EntropyAttribution, NotComparableWarning, Settings
from .entropy import (
    bits_to_nats,
    entropy_from_sigma,
    entropy_to_importance,
    linear_optimal_sigma,
    nats_to_bits,
    sigma_from_entropy,
)
from .optim import OptimSettings
from .result import EntropyResult
from .stats import FeatureStats, TinyStdWarning

__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning",
    "EntropyAttribution",
    "EntropyResult",
    "FeatureStats",
    "NotComparableWarning",
    "OptimSettings",
    "Settings",
    "TinyStdWarning",
    "bits_to_nats",
    "entropy_from_sigma",
    "entropy_to_importance",
    "linear_optimal_sigma",
    "nats_to_bits",
    "sigma_from_entropy",
]
