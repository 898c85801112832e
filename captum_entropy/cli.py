"""The ``captum-entropy`` command.

    captum-entropy explain "a dull, dull movie ." [--model minilm] [--out DIR]   # words × layers, HTML + PNG
    captum-entropy explain --file sentences.txt                                   # one sentence per line
    captum-entropy layers [--model minilm] [--sentences 16]                       # entropy against depth
    captum-entropy compare minilm transformer lstm cnn [--sentences 8]            # the same sentences, four models
    captum-entropy run --data polarity:test [--model minilm] [--out out/run]      # a whole dataset, in shards
    torchrun --nproc_per_node 2 -m captum_entropy.cli run --data FILE.csv ...     # the same, 2 processes
    captum-entropy merge out/run [--to all.safetensors] [--csv words.csv]         # a run as one result / table
    captum-entropy train MODEL [--seed 0] [--epochs N]                            # train a zoo model
    captum-entropy demo                                                           # the `make demo` job

Exit codes: 0 done; 2 bad input (a message says what to fix); 1 an unexpected error.
Nothing heavy is imported before the arguments are read, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

BAD_INPUT = 2


class BadInput(Exception):
    """Input the user can fix: printed without a traceback, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    from ._names import ZOO_MODELS

    parser = argparse.ArgumentParser(prog="captum-entropy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def run_options(p: argparse.ArgumentParser, out: str) -> None:
        p.add_argument("--out", default=out, help=f"folder for the HTML, PNG and result files (default: {out})")
        p.add_argument("--max-steps", type=int, default=100, help="most optimisation steps per feature (default 100)")
        p.add_argument("--layers", default="all", help="'all' or comma-separated layer names (see `layers --list`)")
        p.add_argument("--no-output", action="store_true", help="skip the prediction (the slowest feature)")
        p.add_argument("--bits", action="store_true", help="print bits instead of nats")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.add_argument("--feature-std-texts", metavar="FILE", dest="feature_std_texts",
                       help="sentences (one per line) to fit σ_S, the features' std, on "
                       "(default: 256 training sentences of the embedded polarity corpus; cached)")
        p.add_argument("--stats-file", dest="feature_std_texts", help=argparse.SUPPRESS)  # the old name

    ex = sub.add_parser("explain", help="which words each layer and the prediction keep, for your sentences",
                        description="Explain sentences at every layer and at the predicted class: a words × "
                        "layers table, an HTML report, one heatmap per sentence and the results (safetensors).")
    ex.add_argument("sentences", nargs="*", help="sentences to explain (quote each one)")
    ex.add_argument("--file", help="a text file, one sentence per line (blank lines skipped)")
    ex.add_argument("--model", default="minilm", metavar="MODEL",
                    help=f"a zoo model ({', '.join(ZOO_MODELS)}; default minilm) or a folder holding a Hugging Face "
                    "sequence classifier and its tokenizer (save_pretrained)")
    run_options(ex, "out/explain")

    ly = sub.add_parser("layers", help="how much of the sentence each layer keeps, against depth",
                        description="Corpus-level entropy per layer (mean word entropy per dimension, with a "
                        "95% bootstrap interval) on held-out test sentences or your own; a depth figure.")
    ly.add_argument("--model", default="minilm", metavar="MODEL",
                    help=f"a zoo model ({', '.join(ZOO_MODELS)}; default minilm) or a local Hugging Face classifier folder")
    ly.add_argument("--sentences", type=int, default=16, help="held-out test sentences to use (default 16)")
    ly.add_argument("--file", help="your sentences instead, one per line")
    ly.add_argument("--list", action="store_true", help="only list the model's layers and exit")
    run_options(ly, "out/layers")

    cm = sub.add_parser("compare", help="the same sentences through several models, aligned by word",
                        description="Explain the same sentences with each model (σ_S fitted per model and layer) "
                        "and compare entropy against relative depth and word by word.")
    cm.add_argument("models", nargs="+", choices=ZOO_MODELS, metavar="MODEL", help=f"two or more of {ZOO_MODELS}")
    cm.add_argument("--sentences", type=int, default=8, help="held-out test sentences to use (default 8)")
    cm.add_argument("--file", help="your sentences instead, one per line")
    run_options(cm, "out/compare")

    rn = sub.add_parser("run", help="a whole dataset, in shards that survive a kill (resume by running again)",
                        description="Explain every sentence of a dataset at every layer and the prediction, in "
                        "shards written atomically to --out. Killed at any moment, the same command resumes from "
                        "the last whole shard. Under torchrun each process takes its share of the shards; the "
                        "output is the same as one process's. Then `captum-entropy merge OUT`.")
    rn.add_argument("--data", required=True, metavar="SOURCE",
                    help="polarity:train|dev|test (the embedded corpus), a .csv / .jsonl / .txt file "
                    "(.txt: one sentence a line), or hf:NAME[:SPLIT] (a Hugging Face dataset; needs `datasets`)")
    rn.add_argument("--text-column", default="text", help="the column holding the sentences (default text)")
    rn.add_argument("--label-column", default="label", help="the column holding class indices, or 'none'")
    rn.add_argument("--data-files", help="hf:csv / hf:json only: the local files to load")
    rn.add_argument("--limit", type=int, help="only the first N sentences")
    rn.add_argument("--model", default="minilm", metavar="MODEL",
                    help=f"a zoo model ({', '.join(ZOO_MODELS)}) or a local Hugging Face classifier folder")
    rn.add_argument("--shard-size", type=int, default=16, help="sentences per shard and batch (default 16)")
    rn.add_argument("--no-sort", action="store_true", help="keep dataset order in shards (default: sorted by "
                    "length, so a batch pads little)")
    rn.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="auto: this process's GPU (cuda:LOCAL_RANK) if there is one, else the CPU")
    run_options(rn, "out/run")

    mg = sub.add_parser("merge", help="a run folder as one result file and / or a CSV table of words",
                        description="Check every shard of a run against its index and write them as one "
                        "LayerExplanation (dataset order) and / or a CSV with one line per sentence, feature "
                        "and word.")
    mg.add_argument("run", help="the run folder (--out of `captum-entropy run`)")
    mg.add_argument("--to", help="the merged result (.safetensors; default RUN/merged.safetensors)")
    mg.add_argument("--csv", help="also write the words table as CSV here")
    mg.add_argument("--partial", action="store_true", help="merge what is done although the run is not complete")

    tr = sub.add_parser("train", help="train a zoo model on the polarity train split and cache it")
    tr.add_argument("model", choices=ZOO_MODELS)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--epochs", type=int, default=None, help="default: the zoo's setting for the model")

    demo = sub.add_parser("demo", help="the `make demo` job: varied test sentences through minilm, every layer")
    demo.add_argument("--sentences", type=int, default=3)
    demo.add_argument("--out", default="out/demo")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except BadInput as err:
        print(f"captum-entropy {args.command}: {err}", file=sys.stderr)
        return BAD_INPUT


def _lines(name: str) -> list[str]:
    path = Path(name)
    if not path.is_file():
        raise BadInput(f"no such file: {path}")
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as err:
        raise BadInput(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def _read_sentences(args: argparse.Namespace, default_count: int | None = None) -> list[str]:
    sentences = list(getattr(args, "sentences", None) or []) if default_count is None else []
    if args.file:
        lines = _lines(args.file)
        if not lines:
            raise BadInput(f"--file {args.file} holds no sentences (every line is empty)")
        sentences += lines
    if not sentences and default_count is not None:
        from .zoo import load_polarity

        if default_count < 1:
            raise BadInput(f"--sentences must be at least 1, got {default_count}")
        sentences = [e.text for e in load_polarity("test")[:default_count]]
    if not sentences:
        raise BadInput("no sentences: give them as arguments (quoted) or with --file")
    blank = [i for i, s in enumerate(sentences) if not s.strip()]
    if blank:
        raise BadInput(f"sentence(s) {blank} are empty or whitespace")
    return sentences


def _model(name: str):
    """A zoo name as it is, or a local Hugging Face folder loaded offline."""
    from ._names import ZOO_MODELS

    if name in ZOO_MODELS:
        return name, None
    path = Path(name)
    if not path.is_dir():
        raise BadInput(f"{name!r} is neither a zoo model ({', '.join(ZOO_MODELS)}) nor a folder with a saved model")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        return (AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True).eval(),
                AutoTokenizer.from_pretrained(path, local_files_only=True))
    except (OSError, ValueError) as err:
        raise BadInput(f"cannot load a sequence classifier and tokenizer from {path}: {err}") from None


def _explainer(args: argparse.Namespace, model: Any, tokenizer: Any = None):
    """An Explainer for ``model`` (a zoo name or folder, loaded here; or a loaded model + tokenizer)."""
    from .explainer import Explainer

    if args.max_steps < 1:
        raise BadInput(f"--max-steps must be at least 1, got {args.max_steps}")
    layers = "all" if args.layers == "all" else [n.strip() for n in args.layers.split(",") if n.strip()]
    std_texts = _lines(args.feature_std_texts) if args.feature_std_texts else None
    if std_texts is not None and len(std_texts) < 2:
        raise BadInput(f"--feature-std-texts {args.feature_std_texts} needs at least 2 sentences")
    try:
        if isinstance(model, str) and tokenizer is None:
            model, tokenizer = _model(model)
        return Explainer(model, tokenizer, layers=layers, output=not args.no_output, max_steps=args.max_steps,
                         show_progress=not args.quiet, feature_std_texts=std_texts)
    except ValueError as err:
        raise BadInput(str(err)) from None


def _report(paths: list[str]) -> None:
    print("\nwritten:")
    for p in paths:
        print(f"  {p}")


def _cmd_explain(args: argparse.Namespace) -> int:
    from .viz import save_figure

    sentences = _read_sentences(args)
    ex = _explainer(args, args.model)(sentences)
    unit = "bits" if args.bits else "nats"
    ex.show(unit=unit)
    out = Path(args.out)
    paths = [ex.save_html(out / "report.html")]
    for b in range(len(ex)):
        paths.append(save_figure(ex.plot("heatmap", sentence=b, unit=unit), out / f"sentence{b}.png"))
    ex.save(out / "explanation.safetensors")
    _report(paths + [str(out / "explanation.safetensors")])
    return 0


def _cmd_layers(args: argparse.Namespace) -> int:
    from .viz import depth_table, save_figure

    if args.list:
        from .explainer import as_zoo_model

        zm = as_zoo_model(*_model(args.model))
        for name, module in zm.layers.items():
            print(f"{name:>10}  {type(module).__name__}")
        print(f"{'output':>10}  the predicted class's logit")
        return 0
    sentences = _read_sentences(args, default_count=args.sentences)
    ex = _explainer(args, args.model)(sentences)
    unit = "bits" if args.bits else "nats"
    print(depth_table(ex, unit=unit))
    out = Path(args.out)
    paths = [save_figure(ex.plot("depth", unit=unit), out / "depth.png"), ex.save_html(out / "report.html")]
    ex.save(out / "explanation.safetensors")
    _report(paths + [str(out / "explanation.safetensors")])
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .comparison import compare_models
    from .viz import save_figure

    if len(args.models) < 2:
        raise BadInput("compare needs at least two models, e.g. `captum-entropy compare minilm cnn`")
    sentences = _read_sentences(args, default_count=args.sentences)
    cmp = compare_models([_explainer(args, m)(sentences) for m in args.models])
    cmp.show()
    out = Path(args.out)
    paths = [save_figure(cmp.plot("depth"), out / "depth.png"),
             save_figure(cmp.plot("words", sentence=0), out / "words.png"), cmp.save_html(out / "report.html")]
    cmp.save(out / "comparison.safetensors")
    _report(paths + [str(out / "comparison.safetensors")])
    return 0


def _dataset(args: argparse.Namespace) -> tuple[list[str], list[int]]:
    from .zoo import Example, load_examples, load_hf_split, load_polarity

    spec, label = args.data, None if args.label_column.lower() == "none" else args.label_column
    try:
        if spec.startswith("polarity:"):
            examples = load_polarity(spec.split(":", 1)[1])
        elif spec.startswith("hf:"):
            name, _, split = spec[3:].partition(":")
            extra = {"data_files": args.data_files} if args.data_files else {}
            examples = load_hf_split(name, split or "train", text_column=args.text_column, label_column=label, **extra)
        else:
            path = Path(spec)
            if not path.is_file():
                raise BadInput(f"--data {spec}: no such file (or use polarity:SPLIT or hf:NAME[:SPLIT])")
            examples = ([Example(t, -1) for t in _lines(spec)] if path.suffix.lower() == ".txt" else
                        load_examples(path, text_column=args.text_column, label_column=label))
    except (ValueError, ImportError) as err:
        raise BadInput(f"--data {spec}: {err}") from None
    if args.limit is not None:
        if args.limit < 1:
            raise BadInput(f"--limit must be at least 1, got {args.limit}")
        examples = examples[: args.limit]
    if not examples:
        raise BadInput(f"--data {spec} holds no sentences")
    return [e.text for e in examples], [e.label for e in examples]


def _cmd_run(args: argparse.Namespace) -> int:
    from .runs import distributed, rank_device, run_dataset

    texts, labels = _dataset(args)
    if args.shard_size < 1:
        raise BadInput(f"--shard-size must be at least 1, got {args.shard_size}")
    try:
        rank_device(args.device)
    except ValueError as err:
        raise BadInput(f"--device {args.device}: {err}") from None
    with distributed(args.device) as rank:
        from .explainer import as_zoo_model

        zm = as_zoo_model(*_model(args.model))
        zm.model.to(rank.device)
        explainer = _explainer(args, zm)
        try:
            results = run_dataset(explainer, texts, args.out, labels=labels if any(x >= 0 for x in labels) else None,
                                  shard_size=args.shard_size, sort_by_length=not args.no_sort,
                                  progress=not args.quiet, rank=rank)
        except ValueError as err:
            raise BadInput(str(err)) from None
    if rank.rank == 0 and results is not None:
        state = "complete" if results.complete else f"{len(results.missing_rows)} rows still to do"
        print(f"{len(results)}/{len(texts)} sentences in {len(results.done)} shards ({state})")
        _report([str(Path(args.out))])
        print(f"next: captum-entropy merge {args.out}")
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    from .runs import RunResults

    try:
        results = RunResults(args.run)
        merged = results.merge(allow_partial=args.partial)
    except (ValueError, FileNotFoundError) as err:
        raise BadInput(str(err)) from None
    to = Path(args.to or Path(args.run) / "merged.safetensors")
    merged.save(to)
    paths = [str(to)]
    if args.csv:
        from ._io import write_text

        paths.append(write_text(args.csv, results.table().to_csv(index=False)))
    print(repr(results))
    _report(paths)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .zoo.registry import checkpoint_path, train

    zm = train(args.model, seed=args.seed, epochs=args.epochs)
    print(f"{args.model}: test accuracy {zm.test_accuracy:.3f} on {zm.meta['test_examples']} held-out sentences "
          f"(trained on {zm.meta['train_examples']}, {zm.meta['epochs']} epochs, seed {args.seed})")
    print(f"checkpoint: {checkpoint_path(args.model)}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    if args.sentences < 1:
        raise BadInput(f"--sentences must be at least 1, got {args.sentences}")
    demo_main(["--sentences", str(args.sentences), "--out", args.out])
    return 0


_COMMANDS = {"explain": _cmd_explain, "layers": _cmd_layers, "compare": _cmd_compare, "run": _cmd_run,
             "merge": _cmd_merge, "train": _cmd_train, "demo": _cmd_demo}


if __name__ == "__main__":
    sys.exit(main())
