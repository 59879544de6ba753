"""``steerflow experiment gradient-stability``: train baseline and hybrid on the same data and seed;
table, JSON and Fig. 1.

Train the discrete baseline and the hybrid with the same data order and seed, then write
OUT/table.md, OUT/results.json and OUT/fig1.png (loss, total grad norm, ODE-block grad norm, α over
steps) with paper 1's numbers beside ours. The runs live in OUT/baseline and OUT/hybrid; re-running
reuses finished runs and resumes interrupted ones.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from steerflow.cli.common import add_subcommand, output_folder

#: flags echoed into results.json's "command" (the exact call that produced the numbers)
_ECHO = ("config", "steps", "out", "batch_size", "lr", "warmup_steps", "seed", "eval_batches",
         "test_batches", "threads", "tokenizer", "data_dir", "cache_dir", "device")


def add_parser(sub) -> None:
    p = add_subcommand(sub, "gradient-stability", __doc__)
    p.add_argument("--config", default="small", help="model preset or config.json (default: small)")
    p.add_argument("--steps", type=int, help="optimizer steps per model (default: the preset's)")
    p.add_argument("--out", type=output_folder, required=True, help="output folder")
    p.add_argument("--json", action="store_true", help="print results.json on stdout")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change a ModelConfig field of both models, e.g. --set alpha_init=0.05")
    for flag, kind, text in (
            ("--batch-size", int, "sequences per step"), ("--lr", float, "peak learning rate"),
            ("--warmup", int, "warmup steps"), ("--seed", int, "seed (1337)"),
            ("--eval-batches", int, "batches per periodic validation"),
            ("--test-batches", int, "batches of the final valid/test evaluation (default: all)"),
            ("--threads", int, "torch CPU threads")):
        p.add_argument(flag, type=kind, help=text,
                       dest="warmup_steps" if flag == "--warmup" else None)
    p.add_argument("--tokenizer", help="gpt2 or bpe:N (default: the preset's)")
    p.add_argument("--data-dir", help="local data folder (default: $STEERFLOW_DATA, then the Hub)")
    p.add_argument("--cache-dir", help="prepared-data cache")
    p.add_argument("--device", help="auto (default), cpu, cuda")
    p.add_argument("--quiet", action="store_true", default=None, help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from steerflow.cli.common import print_json
    from steerflow.cli.train import config_from_args
    from steerflow.experiments.gradient_stability import (run_gradient_stability,
                                                          write_gradient_stability)

    command = command_line(args)
    out = Path(args.out)
    args.out = str(out / "hybrid")  # TrainConfig needs a run folder; the experiment sets one per model
    results = run_gradient_stability(config_from_args(args), out, command=command)
    write_gradient_stability(results, out)
    if args.json:
        print_json(results)
    else:
        print((out / "table.md").read_text())
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The command as typed, rebuilt from the parsed flags (for the record in results.json)."""
    parts = ["steerflow", "experiment", "gradient-stability"]
    for name in _ECHO:
        value = getattr(args, name, None)
        if value is not None:
            flag = "--warmup" if name == "warmup_steps" else "--" + name.replace("_", "-")
            parts += [flag, shlex.quote(str(value))]
    parts += [f"--set {shlex.quote(item)}" for item in args.overrides]
    return " ".join(parts)
