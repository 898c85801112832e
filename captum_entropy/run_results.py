"""A run folder read back as one dataset: which rows are done, the shards (checked against their
index lines), one merged :class:`LayerExplanation`, and the words table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from .analysis import LayerExplanation
from .run_folder import RUN_FILE, _file_sha, _read_run, _records, shard_path


class RunResults:
    """The run folder ``out`` as one dataset: which rows are done, the shards, one merged result.

    >>> results = RunResults("out/run")                      # doctest: +SKIP
    >>> results.complete, len(results), results.table().head()   # doctest: +SKIP
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        path = self.out / RUN_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{self.out} holds no {RUN_FILE}: not a run folder (start one with "
                                    "`captum-entropy run` or run_dataset)")
        saved = _read_run(path)
        self.identity: dict = saved["identity"]
        self.plan: list[list[int]] = saved["plan"]
        self.labels: list[int] = saved["labels"]
        records = _records(self.out, self.plan)
        self.done = sorted(k for k in records if shard_path(self.out, k).is_file())
        self._records = records

    def __len__(self) -> int:
        """Sentences done."""
        return sum(len(self.plan[k]) for k in self.done)

    def __repr__(self) -> str:
        return (f"RunResults({str(self.out)!r}, model={self.identity['model']!r}, "
                f"{len(self)}/{self.identity['sentences']} sentences, {len(self.done)}/{len(self.plan)} shards)")

    @property
    def complete(self) -> bool:
        return len(self.done) == len(self.plan)

    @property
    def missing_rows(self) -> list[int]:
        """Dataset rows not done yet (resume the run to compute them)."""
        done = set(self.done)
        return sorted(i for k, rows in enumerate(self.plan) if k not in done for i in rows)

    def shards(self, verify: bool = True) -> Iterator[tuple[list[int], LayerExplanation]]:
        """``(rows, explanation)`` of every done shard; ``verify`` checks each file's sha256
        against its index line (a file changed after it was written is an error)."""
        for k in self.done:
            path = shard_path(self.out, k)
            if verify and _file_sha(path) not in self._records[k]:
                raise ValueError(f"{path} does not match its index line (sha256): it changed after it was "
                                 "written; delete it and resume the run to recompute it")
            yield self.plan[k], LayerExplanation.load(path)

    def merge(self, allow_partial: bool = False) -> LayerExplanation:
        """Every done sentence in one :class:`LayerExplanation`, in dataset order (their dataset
        rows in ``settings["rows"]``)."""
        if not self.complete and not allow_partial:
            raise ValueError(f"{self!r} is not complete ({len(self.missing_rows)} rows missing): resume the run, "
                             "or pass allow_partial=True")
        if not self.done:
            raise ValueError(f"{self.out} has no finished shard yet")
        rows, parts = zip(*self.shards())
        flat = [i for r in rows for i in r]
        merged = LayerExplanation.concat(list(parts))
        merged = merged.take(sorted(range(len(flat)), key=flat.__getitem__))
        merged.settings = {**merged.settings, "rows": sorted(flat)}  # which dataset rows (a partial merge)
        return merged

    def table(self, unit: str = "nats"):
        """A pandas DataFrame, one row per (sentence, feature, word): the dataset row, its label,
        the prediction, the feature and its depth, the word and its number of pieces (tokens),
        ``entropy_per_dim`` and ``kept_per_dim`` (``unit``/dim, each the mean over the word's
        pieces and dimensions: rank and compare words by these), ``share`` (kept_per_dim over
        the sentence's sum), ``entropy_total`` and ``kept_total`` (``unit``, summed over the
        word's pieces and dimensions), ``kept_se`` (the standard error of ``kept_per_dim`` from
        the noise draws, NaN where not measured) and ``kept_low``/``kept_high`` (its 95 %
        interval), ``undetermined`` (the interval overlaps that of the word ranked next to it),
        saturation, the feature's convergence, and ``ambiguous`` (another optimum keeps other
        words)."""
        import pandas as pd

        cols: dict[str, list] = {k: [] for k in ("row", "label", "prediction", "probability", "feature", "depth",
                                                 "word_index", "word", "pieces", "entropy_per_dim", "kept_per_dim",
                                                 "share", "entropy_total", "kept_total", "kept_se", "kept_low",
                                                 "kept_high", "undetermined", "saturated", "converged", "ambiguous")}
        for rows, ex in self.shards():
            for b, row in enumerate(rows):
                words, pieces = ex.words(b), ex.word_pieces(b).tolist()
                ent, kept, share, sat = (ex.word_entropy(b, unit), ex.word_kept(b, unit), ex.word_share(b),
                                         ex.word_saturated(b))
                ent_total, kept_total = ex.word_entropy_total(b, unit), ex.word_kept_total(b, unit)
                kept_se, (low, high), loose = ex.word_kept_se(b, unit), ex.word_kept_interval(b, unit), ex.word_undetermined(b)
                for f, feature in enumerate(ex.features):
                    n = len(words)
                    cols["row"] += [row] * n
                    cols["label"] += [self.labels[row]] * n
                    cols["prediction"] += [int(ex.prediction[b])] * n
                    cols["probability"] += [float(ex.probability[b])] * n
                    cols["feature"] += [feature] * n
                    cols["depth"] += [ex.depth[f]] * n
                    cols["word_index"] += list(range(n))
                    cols["word"] += words
                    cols["pieces"] += pieces
                    cols["entropy_per_dim"] += ent[f].tolist()
                    cols["kept_per_dim"] += kept[f].tolist()
                    cols["share"] += share[f].tolist()
                    cols["entropy_total"] += ent_total[f].tolist()
                    cols["kept_total"] += kept_total[f].tolist()
                    cols["kept_se"] += kept_se[f].tolist()
                    cols["kept_low"] += low[f].tolist()
                    cols["kept_high"] += high[f].tolist()
                    cols["undetermined"] += loose[f].tolist()
                    cols["saturated"] += sat[f].tolist()
                    cols["converged"] += [bool(ex.converged[f, b])] * n
                    cols["ambiguous"] += [bool(ex.ambiguous[f, b])] * n
        return pd.DataFrame(cols).sort_values("row", kind="stable").reset_index(drop=True)
