"""``steerflow train``: train a baseline or hybrid model on WikiText-2, or steer a trained one.

Train a discrete baseline or a continuous-depth hybrid on WikiText-2 (--task lm), train the ODE
block of a checkpoint on texts labelled with u (--task steer --from CKPT), fine-tune a checkpoint
into a DExperts expert on one label's SST-2 sentences (--task expert --from CKPT --expert-label
1|-1), or distill a contrast teacher into the single pass at u (--task distill --from CKPT
--teacher dexperts:POS,NEG|guidance). Writes the final model
into --out (save_pretrained, tokenizer included), metrics.jsonl, train_config.json, summary.json and
resumable checkpoints under OUT/checkpoints/. Data-parallel: torchrun --nproc_per_node=K -m
steerflow train ... . Exit code 130 when a signal stopped the run (its state is saved; rerun with
--resume).
"""

# A thin wrapper around steerflow.train.train: every flag is a TrainConfig field.

from __future__ import annotations

import argparse
import json
from typing import Any

from steerflow.cli.common import add_subcommand, output_folder, positive_float
from steerflow.errors import ConfigError

EXIT_INTERRUPTED = 130


def add_parser(sub) -> None:
    p = add_subcommand(sub, "train", __doc__)
    what = p.add_argument_group("what to train")
    what.add_argument("--config", help="model preset (tiny, small, paper, gpt2) or a config.json "
                                       "path (default: small)")
    what.add_argument("--model", choices=["baseline", "hybrid"],
                      help="discrete baseline or hybrid with an ODE block (default: hybrid)")
    what.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="change a ModelConfig field, e.g. --set alpha_init=0.05 (repeatable; "
                           "VALUE is JSON, else a string)")
    what.add_argument("--task", choices=["lm", "steer", "expert", "distill"],
                      help="lm pretraining (default), steer, expert or distill")
    what.add_argument("--from", dest="init_from", metavar="CKPT",
                      help="start from this checkpoint folder (required for steer, expert and "
                           "distill)")
    what.add_argument("--steer-data", help="steering texts: sst2 (default), sst2-shaped (after a "
                                           "neutral opening, loss on the continuation), cloze "
                                           "or a .jsonl file")
    what.add_argument("--steer-axis", type=int, help="control axis of the sentiment label")
    what.add_argument("--train-discrete", action="store_true", default=None,
                      help="--task steer: also train the discrete blocks")
    what.add_argument("--train-final-norm", action="store_true", default=None,
                      help="--task steer: also train the final LayerNorm (a frozen one caps the "
                           "probability of any single next token; see the probe ceiling in "
                           "eval steering)")
    what.add_argument("--steer-alpha", choices=["frozen", "trained"],
                      help="--task steer: keep the ODE block's α fixed (default; Adam grows a "
                           "trained scalar α about one lr per step until the solve diverges) "
                           "or train it")
    what.add_argument("--steer-alpha-value", type=_alpha_value, metavar="{auto,keep,init,A}",
                      help="--task steer: first rewrite α·F with α = A and F's output layer "
                           "scaled to match (the same model; Adam then moves α·F by A·lr per "
                           "step, not α·lr). auto (default): A = 1 for the mlp field, else keep; "
                           "keep: α as pretrained; init: the config's alpha_init")
    what.add_argument("--control-gain", dest="control_gain", type=float, metavar="G",
                      help="--task steer/distill: u enters the field as G·W_u·u with W_u scaled "
                           "by 1/G first (the same model; Adam then moves u's effect G times "
                           "faster; default: the checkpoint's gain)")
    what.add_argument("--control-out", dest="control_out", action="store_true",
                      help="--task steer/distill: add a direct control path g·W_o·u to the mlp "
                           "field (W_o = 0 at first: the same model), so u writes a learned "
                           "direction into the residual stream")
    what.add_argument("--control-adapter", dest="control_adapter", type=int, metavar="R",
                      help="--task steer/distill: add a u-gated adapter of rank R to the mlp "
                           "field, g·sum_a u_a·B_a·silu(A·x) (B = 0 at first: the same model), a "
                           "control path that depends on the token's state and is 0 at u = 0")
    what.add_argument("--train-head", action="store_true", default=None,
                      help="--task steer/distill: untie the LM head from the embeddings and train "
                           "it, so the logits can leave the base head's span (where little of a "
                           "sentiment contrast lies on a small model)")
    what.add_argument("--control-only", action="store_true", default=None,
                      help="--task steer/distill: train only the field's zero-initialised control "
                           "paths (--control-out's, or the depth-block field's u input), so the "
                           "field at u = 0 stays the pretrained one")
    what.add_argument("--steer-discriminative", type=_discriminative_weight, metavar="W",
                      nargs="?", const=_GEDI,
                      help="--task steer: weight of GeDi's discriminative term, loss = (1 - W) LM "
                           "+ W (-log P(u | x)) with P(u | x) = sigmoid(s (l(x|u) - l(x|-u))) from "
                           "the length-normalised likelihoods at u and -u and a learned scale s "
                           "(default 0: the paper's LM loss; the flag alone: GeDi's W = 0.2; a "
                           "step costs twice as much)")
    what.add_argument("--steer-anchor", type=float, metavar="LAMBDA",
                      help="--task steer: also train on a WikiText-2 batch at u = 0 each step, "
                           "weighted LAMBDA, so the unsteered model (u = 0) stays the pretrained "
                           "LM on general text (default 0: off)")
    what.add_argument("--lm-u", choices=["zero", "random", "conditional"],
                      help="u during LM pretraining: zero (default, paper 1), random in [-1, 1], "
                           "or conditional: a share of SST-2 sentences at their label's u")
    what.add_argument("--lm-u-share", type=float, metavar="P",
                      help="--lm-u conditional: share of SST-2 rows in a batch (0.25)")
    what.add_argument("--lm-u-dropout", type=float, metavar="P",
                      help="--lm-u conditional: probability an SST-2 row's u is dropped to 0 (0.1)")
    what.add_argument("--expert-label", type=int, choices=[1, -1],
                      help="--task expert: learn the positive (1, default) or negative (-1) "
                           "SST-2 sentences (or the texts of a .jsonl --steer-data labelled so)")
    what.add_argument("--teacher", dest="distill_teacher", metavar="dexperts:POS,NEG|guidance",
                      help="--task distill: the contrast the single pass learns, DExperts with "
                           "two expert checkpoints or the model's own guidance over u; "
                           "'dexperts:P0,N0;P1,N1' sums one pair per axis from --steer-axis "
                           "(a pair may end in @ALPHA, its own strength)")
    what.add_argument("--teacher-alpha", dest="distill_alpha", type=float, metavar="A",
                      help="--task distill: the teacher's strength at |u| = 1 (2.0)")
    what.add_argument("--on-policy", dest="distill_on_policy", type=float, metavar="P",
                      help="--task distill: share of rows that are openings continued by the "
                           "teacher (0.5; the rest are WikiText-2 windows)")
    what.add_argument("--teacher-tokens", dest="distill_tokens", type=int, metavar="N",
                      help="--task distill: tokens the teacher adds to each opening (20)")
    what.add_argument("--teacher-top-p", dest="distill_top_p", type=float, metavar="P",
                      help="--task distill: the teacher on the base's nucleus P (other tokens "
                           "get probability 0), as DExperts samples (default: whole vocabulary)")
    what.add_argument("--teacher-orthogonal", dest="distill_orthogonal", action="store_true",
                      default=None,
                      help="--task distill with several expert pairs: make each pair's logit "
                           "shift orthogonal to the earlier pairs' in the base's Fisher metric, "
                           "so one axis does not move the others' attributes (first order)")
    data = p.add_argument_group("data")
    data.add_argument("--tokenizer", help="gpt2 or bpe:N (default: bpe:<preset vocab> for "
                                          "tiny/small, gpt2 for paper/gpt2)")
    data.add_argument("--data-dir", help="local data folder (default: $STEERFLOW_DATA, then the Hub)")
    data.add_argument("--cache-dir", help="prepared-data cache (default: $STEERFLOW_CACHE or "
                                          "~/.cache/steerflow)")
    opt = p.add_argument_group("optimisation")
    for flag, kind, text in (
            ("--steps", int, "optimizer steps"), ("--batch-size", int, "sequences per step (global)"),
            ("--block-size", int, "context length"), ("--lr", float, "peak learning rate"),
            ("--min-lr-ratio", float, "final lr / peak lr of the cosine (default 0.1)"),
            ("--warmup", int, "linear warmup steps"), ("--weight-decay", float, "AdamW decay (0.1)"),
            ("--beta1", float, "AdamW β1 (0.9)"), ("--beta2", float, "AdamW β2 (0.95)"),
            ("--grad-clip", float, "clip the total grad norm (1.0; 0 = off)"),
            ("--grad-accum", int, "micro-batches per step (1)"), ("--seed", int, "seed (1337)")):
        opt.add_argument(flag, type=kind, help=text,
                         dest="warmup_steps" if flag == "--warmup" else None)
    opt.add_argument("--ode-consistency", type=float, metavar="LAMBDA",
                     help="weight of the coarse-vs-rk4 consistency penalty on the ODE block "
                          "(default 0: off; 100 kept the steered field a continuous flow on "
                          "small, at 3-5x the step cost)")
    opt.add_argument("--field-max-norm", type=float, metavar="R",
                     help="after every step, scale the ODE field's output-layer weight back to "
                          "Frobenius norm R when larger (default: off)")
    opt.add_argument("--ode-random-steps", type=int, nargs="+", metavar="N",
                     help="draw the training solver's step count from these at each step")
    run = p.add_argument_group("run")
    run.add_argument("--out", type=output_folder, required=True,
                     help="run folder (created; never wiped)")
    run.add_argument("--resume", action="store_true", default=None,
                     help="continue the run in --out from its last checkpoint")
    for flag, kind, text in (
            ("--eval-interval", int, "validate every N steps (default: 5 times per run)"),
            ("--eval-batches", int, "batches per periodic validation (20)"),
            ("--test-batches", int, "batches of the final evaluation (default: whole split)"),
            ("--eval-batch-size", int, "evaluation batch size (default: --batch-size)"),
            ("--save-every", int, "checkpoint every N steps (default: 4 times per run)"),
            ("--keep-checkpoints", int, "checkpoints to keep (3)"),
            ("--threads", int, "torch CPU threads"),
            ("--explode-window", int, "running-median window of the exploding test (50)")):
        run.add_argument(flag, type=kind, help=text)
    run.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    run.add_argument("--dtype", choices=["float32", "bfloat16"], help="autocast dtype")
    run.add_argument("--compile", action="store_true", default=None,
                     help="torch.compile the model (graph breaks at torchdiffeq; pays off on GPU)")
    run.add_argument("--vanish-floor", type=float, help="vanishing-gradient floor (1e-6)")
    run.add_argument("--explode-factor", type=float,
                     help="exploding = grad norm above this × running median (10)")
    run.add_argument("--on-nonfinite", choices=["skip", "stop"],
                     help="on a NaN/inf loss or gradient: skip the update (default) or stop")
    run.add_argument("--quiet", action="store_true", default=None, help="no progress bar or logs")
    run.add_argument("--json", action="store_true", help="print summary.json's content on stdout")
    p.set_defaults(func=run_command)


#: what ``--steer-discriminative`` without a value stands for (argparse passes a string const
#: through ``type``): GeDi's weight, ``train.config.GEDI_WEIGHT``, read only when the flag is used
_GEDI = "gedi"


def _discriminative_weight(text: str) -> float:
    """A number, or GeDi's weight for the bare flag (argparse type of --steer-discriminative)."""
    if text == _GEDI:
        from steerflow.train.config import GEDI_WEIGHT

        return GEDI_WEIGHT
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None


def _alpha_value(text: str) -> Any:
    """``auto``, ``keep``, ``init`` or a positive number (argparse type of --steer-alpha-value)."""
    from steerflow.train.config import STEER_ALPHA_VALUES

    if text in STEER_ALPHA_VALUES:
        return text
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected auto, keep, init or a positive number, got "
                                         f"{text!r}") from None


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["alpha_init=0.05", "field=mlp"]`` → ``{"alpha_init": 0.05, "field": "mlp"}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def config_from_args(args: argparse.Namespace):
    """The :class:`TrainConfig` the flags describe (unset flags keep the config's defaults)."""
    import dataclasses

    from steerflow.train.config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    values["model_overrides"] = parse_overrides(args.overrides)
    return TrainConfig(**values)


def run_command(args: argparse.Namespace) -> int:
    from steerflow.cli.common import print_json
    from steerflow.train import train

    cfg = config_from_args(args)
    result = train(cfg)
    if args.json and _is_rank0():
        print_json(result.summary())
    return EXIT_INTERRUPTED if result.interrupted else 0


def _is_rank0() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"
