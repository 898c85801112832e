"""The ``captum-entropy`` command.

    captum-entropy train MODEL [--seed 0] [--epochs N]   # train a zoo model, print its test accuracy
    captum-entropy demo [--sentences 3] [--out out/demo] # the `make demo` job
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from ._names import ZOO_MODELS as MODEL_NAMES

    parser = argparse.ArgumentParser(prog="captum-entropy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train a zoo model on the polarity train split and cache it")
    tr.add_argument("model", choices=MODEL_NAMES)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--epochs", type=int, default=None, help="default: the zoo's setting for the model")
    demo = sub.add_parser("demo", help="explain test sentences with minilm, at the output and at every layer")
    demo.add_argument("--sentences", type=int, default=3)
    demo.add_argument("--out", default="out/demo")
    args = parser.parse_args(argv)
    if args.command == "train":
        from .zoo import checkpoint_path, train

        zm = train(args.model, seed=args.seed, epochs=args.epochs)
        print(f"{args.model}: test accuracy {zm.test_accuracy:.3f} on {zm.meta['test_examples']} held-out sentences "
              f"(trained on {zm.meta['train_examples']}, {zm.meta['epochs']} epochs, seed {args.seed})")
        print(f"checkpoint: {checkpoint_path(args.model)}")
    else:
        from .demo import main as demo_main

        demo_main(["--sentences", str(args.sentences), "--out", args.out])
    return 0


if __name__ == "__main__":
    sys.exit(main())
