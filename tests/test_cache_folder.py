"""The cache folder: a read-only or full cache (or one under a file) is an ``OSError`` naming the
folder, ``$CAPTUM_ENTROPY_CACHE`` and the fix, before any download; cases of the bad-input matrix,
run as in ``tests/bad_input_world.py`` (with pytest's ``monkeypatch`` for the cache folder).
"""

from __future__ import annotations

import errno
import io
import tarfile
import tempfile
from pathlib import Path

import pytest

from .bad_input_world import P, World, run_case


def _polarity_archive(folder: Path) -> tuple[Path, str]:
    import hashlib

    from captum_entropy.zoo import data as D

    raw = b"\xef\xbb\xbf" + b'"1","a fine film . "\r\n"-1","a dull film . "'
    path = folder / D.POLARITY_ARCHIVE
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(D.POLARITY_MEMBER)
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    return path, hashlib.sha256(raw).hexdigest()


def _cache_unwritable(w: World, monkeypatch, err: OSError):
    from captum_entropy.zoo import data as D

    cache = w.tmp / "cache"
    cache.mkdir()
    monkeypatch.setenv("CAPTUM_ENTROPY_CACHE", str(cache))
    archive, digest = _polarity_archive(w.tmp)
    real = tempfile.mkstemp

    def refuse(*args, dir=None, **kw):  # noqa: A002  what a read-only or full folder does
        if dir is not None and Path(dir) == cache:
            raise err
        return real(*args, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    return lambda: D.fetch_polarity(archive=archive, sha256=digest)


def _cache_is_a_file(w: World, monkeypatch):
    from captum_entropy.zoo import data as D

    blocker = w.tmp / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CAPTUM_ENTROPY_CACHE", str(blocker / "cache"))
    archive, digest = _polarity_archive(w.tmp)
    return lambda: D.fetch_polarity(archive=archive, sha256=digest)


def _save_model_read_only(w: World, monkeypatch):
    from captum_entropy.zoo import build, save_model

    cache = w.tmp / "ro_cache"
    (cache / "models").mkdir(parents=True)
    monkeypatch.setenv("CAPTUM_ENTROPY_CACHE", str(cache))
    zm = build("cnn", ["a fine film", "a dull film"], glove=False, config=dict(dim=6, filters=4))
    w.track(zm.model)
    real = tempfile.mkstemp

    def refuse(*args, dir=None, **kw):  # noqa: A002
        if dir is not None and Path(dir).is_relative_to(cache):
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real(*args, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    return lambda: save_model(zm)


CACHE_CASES = [
    P(lambda w, mp: _cache_unwritable(w, mp, PermissionError(errno.EACCES, "Permission denied")), PermissionError,
      r"cannot write to the cache folder .* \(\$CAPTUM_ENTROPY_CACHE=.*\): Permission denied; set \$CAPTUM_ENTROPY_CACHE "
      r"to a writable folder", id="cache-read-only"),
    P(lambda w, mp: _cache_unwritable(w, mp, OSError(errno.ENOSPC, "No space left on device")), OSError,
      r"cannot write to the cache folder .*: the disk is full; set \$CAPTUM_ENTROPY_CACHE to a writable folder with free space",
      id="cache-full"),
    P(_cache_is_a_file, OSError, r"cannot write to the cache folder .*CAPTUM_ENTROPY_CACHE=.*set \$CAPTUM_ENTROPY_CACHE",
      id="cache-path-under-a-file"),
    P(_save_model_read_only, PermissionError,
      r"cannot write to the cache folder .*models.*Permission denied; set \$CAPTUM_ENTROPY_CACHE", id="checkpoint-save-read-only-cache"),
]


@pytest.mark.parametrize("make, expected, match", CACHE_CASES)
def test_bad_cache(make, expected, match, tmp_path, monkeypatch):
    world = World(tmp_path)
    run_case(world, make(world, monkeypatch), expected, match)
