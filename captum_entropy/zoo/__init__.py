"""Embedded default models and data: the polarity corpus and four sentiment classifiers, and
the synthetic reversal task (:mod:`~captum_entropy.zoo.reversal`) trained by the same loop."""

from .._deprecated import moved_module
from . import reversal
from .data import LABEL_NAMES, Example, cache_dir, load_examples, load_hf_split, load_polarity
from .registry import MODEL_NAMES, TRAINING, ZooModel, build, checkpoint_path, from_hf_classifier, load, save_model, train
from .reversal import ReverseLSTM, ReverseTransformer, load_reversal, save_reversal, train_reversal

# the module training.py was train.py: that path still imports, with a warning (see _deprecated)
moved_module(f"{__name__}.train", f"{__name__}.training", f"{__name__}.registry:train")

__all__ = [
    "LABEL_NAMES",
    "MODEL_NAMES",
    "TRAINING",
    "Example",
    "ReverseLSTM",
    "ReverseTransformer",
    "ZooModel",
    "build",
    "cache_dir",
    "checkpoint_path",
    "from_hf_classifier",
    "load",
    "load_examples",
    "load_hf_split",
    "load_polarity",
    "load_reversal",
    "reversal",
    "save_model",
    "save_reversal",
    "train",
    "train_reversal",
]
