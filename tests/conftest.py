"""Fixtures shared by the tests."""

import pytest

from .tiny_models import padded_batch, tiny_bert


@pytest.fixture
def bert():
    return tiny_bert()


@pytest.fixture
def bert_batch():
    """Token ids with two padded sentences, and their attention mask."""
    return padded_batch()


@pytest.fixture(scope="session")
def zoo_cache():
    """The zoo's cache (data, checkpoints), shared by the slow zoo tests and the notebooks of a run:
    a model is trained at most once per machine, then loaded (``$CAPTUM_ENTROPY_CACHE`` or
    ``~/.cache/captum_entropy``)."""
    from captum_entropy.zoo import cache_dir

    return cache_dir()
