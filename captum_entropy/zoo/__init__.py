"""Embedded default models and data: the polarity corpus and four sentiment classifiers."""

from .data import LABEL_NAMES, Example, cache_dir, load_examples, load_hf_split, load_polarity
from .registry import MODEL_NAMES, TRAINING, ZooModel, build, checkpoint_path, from_hf_classifier, load, save_model, train

__all__ = [
    "LABEL_NAMES",
    "MODEL_NAMES",
    "TRAINING",
    "Example",
    "ZooModel",
    "build",
    "cache_dir",
    "checkpoint_path",
    "from_hf_classifier",
    "load",
    "load_examples",
    "load_hf_split",
    "load_polarity",
    "save_model",
    "train",
]
