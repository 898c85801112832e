"""What the benchmark scripts share: σ_S, agreement scores, timing, intervals, result JSON, chunks.

Run a script as ``python benchmarks/NAME.py`` from the repository root with the package installed
(``make`` installs it editable): Python puts this folder on ``sys.path``, so ``from common import
...`` works, and ``captum_entropy`` comes from the installed package.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

import numpy as np

if TYPE_CHECKING:  # torch and the package load when a helper needs them: importing this is cheap
    import torch
    from torch import Tensor, nn

T = TypeVar("T")
STATS_BATCH = 64  # sentences per batch when σ_S is fitted (as in the library's own fit)
# captum_entropy 0.1's default on a prediction (a small fixed-size feature: a logit, a probability):
# independent draws, no precision stop, no check of other optima. 0.2 decides these per feature
# (OptimSettings.for_feature); a benchmark whose stored results 0.1 made, or that compares with
# it, passes them explicitly. On a hidden layer or the pooled output they are 0.2's default too.
DEFAULT_0_1 = {"antithetic": False, "precision": None, "starts": 1}


def add_as_0_1(parser: argparse.ArgumentParser, what: str) -> None:
    """``--as-0.1``: run ``what`` with captum_entropy 0.1's default on a prediction
    (:data:`DEFAULT_0_1`: independent draws, no precision stop, no check), as results stored
    before 0.2 were made. Read it back with :func:`default_arm`."""
    parser.add_argument("--as-0.1", dest="as_0_1", action="store_true",
                        help=f"{what} with captum_entropy 0.1's default on a prediction (common.DEFAULT_0_1: "
                             "independent draws, no precision stop, no check), as the results stored before 0.2 "
                             "were made; hidden layers and the pooled output are the same either way")


def default_arm(args: argparse.Namespace) -> dict:
    """The settings of the default arm: ``{}`` (today's defaults) or :data:`DEFAULT_0_1` under ``--as-0.1``."""
    return dict(DEFAULT_0_1) if args.as_0_1 else {}


# -- σ_S (the features' std) ---------------------------------------------------------------------

def training_batches(tokenize: Callable[[list[str]], tuple[Tensor, Tensor]], n: int | None = None,
                     batch_size: int = STATS_BATCH, device: torch.device | str | None = None
                     ) -> list[tuple[Tensor, Tensor]]:
    """``(ids, mask)`` batches of the first ``n`` polarity training sentences (default: the
    library's σ_S data, ``captum_entropy.explainer.STATS_SENTENCES`` = 256)."""
    from captum_entropy.explainer import STATS_SENTENCES
    from captum_entropy.zoo import load_polarity

    n = STATS_SENTENCES if n is None else n
    texts = [e.text for e in load_polarity("train")[:n]]
    batches = []
    for i in range(0, len(texts), batch_size):
        ids, mask = tokenize(texts[i:i + batch_size])
        batches.append((ids.to(device), mask.to(device)) if device is not None else (ids, mask))
    return batches


_ZOO_STATS: dict[int, tuple[Any, Any]] = {}  # id(zm) -> (zm, its FeatureStats); zm kept, so its id stays its own


def zoo_feature_std(zm: Any, module: nn.Module | None) -> Tensor:
    """σ_S of ``module``'s output (``None``: the model's output) for a zoo model.

    The layers in ``zm.layers`` and the output come from the library's cached fit
    (:func:`captum_entropy.explainer.feature_stats`, 256 training sentences); any other module
    is fitted on the same sentences.
    """
    from captum_entropy import FeatureStats
    from captum_entropy.explainer import feature_stats

    if id(zm) not in _ZOO_STATS:
        _ZOO_STATS[id(zm)] = (zm, feature_stats(zm))
    stats = _ZOO_STATS[id(zm)][1]
    names = {id(m): name for name, m in zm.layers.items()}
    if module is None or id(module) in names:
        return stats[stats.name_of(module, names)]
    device = next(zm.model.parameters()).device
    batches = training_batches(zm.tokenize, device=device)
    return FeatureStats().fit(zm.forward, batches, layers={"f": module}, mask_index=1)["f"]


# -- agreement of two σ (or any positive scores) -------------------------------------------------

def _flat(x: Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    import torch

    return (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).ravel()


def spearman(a: Tensor | np.ndarray | Sequence[float], b: Tensor | np.ndarray | Sequence[float]) -> float:
    """Spearman's ρ of two score vectors; NaN when either is constant (ρ is undefined there)."""
    from scipy.stats import spearmanr

    x, y = _flat(a), _flat(b)
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(spearmanr(x, y)[0])


def median_abs_dlog(a: Tensor | np.ndarray | Sequence[float], b: Tensor | np.ndarray | Sequence[float],
                    lower: bool = False) -> float:
    """Median of |log a − log b| over the elements (0.1 ≈ 10 % apart).

    Tensors are compared in torch and their own dtype, anything else in numpy, as the scripts
    always did (so a rerun repeats their numbers to the last bit). ``lower=True`` takes the lower
    of the two middle values for an even count, as ``torch.median`` does (speed.py and
    optimizer_accuracy.py have always reported that one).
    """
    import torch

    if isinstance(a, torch.Tensor):
        d = (a.log() - b.log()).abs().detach().cpu().numpy().ravel()
    else:
        d = np.abs(np.log(np.asarray(a)) - np.log(np.asarray(b))).ravel()
    return float(np.quantile(d, 0.5, method="lower") if lower else np.median(d))


# -- timing ----------------------------------------------------------------------------------------

def timed(fn: Callable[[], T], device: torch.device | str | None = None) -> tuple[T, float]:
    """``fn()``'s result and its wall time in seconds (on CUDA, with the device synchronised)."""
    import torch

    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


# -- intervals -------------------------------------------------------------------------------------

def format_ci(mean: float, low: float, high: float, digits: int = 3) -> str:
    """``"mean [low, high]"`` with ``digits`` decimals; ``"n/a"`` when the mean is not finite.

    The intervals themselves come from :func:`captum_entropy.evaluate.statistics.bootstrap_ci`.
    """
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


# -- result files ----------------------------------------------------------------------------------

def write_json(path: str | Path, obj: Any, default: Callable[[Any], Any] | None = None) -> Path:
    """Write ``obj`` as indented JSON, atomically (a killed run leaves the old file), folders made."""
    from captum_entropy.viz import write_text

    return Path(write_text(path, json.dumps(obj, indent=1, default=default) + "\n"))


def import_file(path: str | Path, name: str | None = None) -> ModuleType:
    """Import one Python file as a module (code that is not an installed package, e.g. the
    authors' ``Interpreter.py`` or ``tests/tiny_models.py``), without touching ``sys.path``."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- resumable chunks: files named ``{prefix}-{start:04d}-{end:04d}{suffix}`` under a work folder ---

def chunk_path(work: Path, prefix: str, start: int, end: int, suffix: str) -> Path:
    """The name holds both ends: a rerun with other counts never takes a shorter chunk for a full one."""
    return work / f"{prefix}-{start:04d}-{end:04d}{suffix}"


def missing_chunks(work: Path, prefix: str, suffix: str, count: int, size: int) -> list[tuple[int, int]]:
    """``(start, end)`` chunks of at most ``size`` items that cover what no chunk on disk covers of
    items 0..count, so a rerun with another chunk size resumes instead of starting again."""
    covered = [False] * count
    for p in work.glob(f"{prefix}-[0-9]*-[0-9]*{suffix}"):
        start, end = (int(x) for x in p.name[len(prefix) + 1:-len(suffix)].split("-"))
        covered[start:min(end, count)] = [True] * max(0, min(end, count) - start)
    out, i = [], 0
    while i < count:
        if covered[i]:
            i += 1
            continue
        end = i
        while end < count and not covered[end] and end - i < size:
            end += 1
        out.append((i, end))
        i = end
    return out


def covering(work: Path, prefix: str, suffix: str) -> list[Path]:
    """The chunks that cover items 0, 1, … without gap or overlap (the longest at each start)."""
    chunks: dict[int, tuple[int, Path]] = {}
    for p in work.glob(f"{prefix}-[0-9]*-[0-9]*{suffix}"):
        start, end = (int(x) for x in p.name[len(prefix) + 1:-len(suffix)].split("-"))
        if end > chunks.get(start, (0, p))[0]:
            chunks[start] = (end, p)
    out, covered = [], 0
    while covered in chunks:
        end, p = chunks[covered]
        out.append(p)
        covered = end
    return out
