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
def zoo_cache(tmp_path_factory):
    """One cache folder (data, checkpoints) shared by the slow zoo tests of a session."""
    import os

    path = tmp_path_factory.mktemp("zoo_cache")
    old = os.environ.get("CAPTUM_ENTROPY_CACHE")
    os.environ["CAPTUM_ENTROPY_CACHE"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("CAPTUM_ENTROPY_CACHE", None)
        else:
            os.environ["CAPTUM_ENTROPY_CACHE"] = old
