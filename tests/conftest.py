"""Fixtures shared by the tests."""

import pytest
import torch

from .tiny_models import tiny_bert


@pytest.fixture
def bert():
    return tiny_bert()


@pytest.fixture
def bert_batch():
    """Token ids with two padded sentences, and their attention mask."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 60, (4, 9), generator=g)
    ids[:, 0] = 2  # [CLS]-like
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[3, 4:] = 0
    ids[mask == 0] = 0
    return ids, mask


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
