"""``steerflow eval steering CKPT``: steering: the paper's probe and sweep, open-ended steering,
baselines.

Evaluate a steered checkpoint: P(' good') / P(' bad') after 'The movie was' for u in {+1, 0, -1} and
a sweep over [-2, 2] (paper 1, Table 2 and Fig. 2); open-ended continuations of neutral WikiText-2
prompts (or --prompts-file) judged by an SST-2 classifier, MiniLM (when steerflow[eval] is
installed) and VADER (reported, not a gate), with 95% intervals, perplexity (also under an
independent --scorer LM), distinct-n and generation tokens/s; and the methods compared on the same
prompts and random numbers: no control, guidance over u, DExperts (--dexperts), ActAdd with the
CAA direction on the base model, the additive-injection ablation. Writes results.json, results.md,
fig2.png and tradeoff.png.
"""

from __future__ import annotations

import argparse

from steerflow.cli.common import add_common_flags, add_data_flags, add_subcommand, torch_threads


def _floats(text: str) -> tuple[float, ...]:
    """argparse ``type=`` for comma-separated finite numbers."""
    import math

    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    return values


def _default_text(value) -> str:
    """A settings default as the help shows it: ``50``, ``0.9``, ``-2,-1.5,...,2``."""
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" for v in value)
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


#: (flag, SteeringEvalConfig field, argparse type, help); the default is the field's default
_SETTINGS_FLAGS = (
    ("--prompts", "prompts", int, "neutral prompts (the first N of --prompts-file)"),
    ("--prompts-file", "prompts_file", str, "JSON lines with a \"prompt\" or \"text\" field, "
                                            "or plain text: the prompts instead of WikiText-2's"),
    ("--samples", "samples", int, "samples per prompt"),
    ("--max-new-tokens", "max_new_tokens", int, "new tokens"),
    ("--top-p", "top_p", float, "nucleus mass"),
    ("--temperature", "temperature", float, "temperature"),
    ("--seed", "seed", int, "prompt choice and sampling seed"),
    ("--sweep-points", "sweep_points", int, "probe sweep points on [-2, 2]"),
    ("--open-us", "open_us", _floats, "u values of the open-ended sweep"),
    ("--actadd-coefs", "actadd_coefs", _floats, "ActAdd coefficients"),
    ("--caa-sentences", "caa_sentences", int, "SST-2 train sentences per class for ActAdd's CAA "
                                              "direction"),
    ("--guidance-gammas", "guidance_gammas", _floats, "guidance weights γ >= 0 over u = ±1"),
    ("--dexperts-alphas", "dexperts_alphas", _floats, "DExperts weights α >= 0 (with --dexperts)"),
    ("--axis", "axis", int, "control axis to steer, for control_dim > 1"),
)


def add_parser(sub) -> None:
    from steerflow.steer.settings import ACTADD_VECTORS, SteeringEvalConfig

    p = add_subcommand(sub, "steering", __doc__)
    p.add_argument("checkpoint", help="the steered checkpoint (a `steerflow train --task steer` "
                                      "run folder)")
    add_common_flags(p, out="folder for results (default CKPT/eval-steering)", device=None,
                     json="print results.json's object on stdout")
    p.add_argument("--base", default=None, help="the pretrained model steering started from "
                   "(default: --from of the run, read from CKPT/train_config.json)")
    p.add_argument("--ablation", default=None, help="the additive-injection model "
                                                    "(injection=add) trained like CKPT")
    p.add_argument("--baseline", default=None, help="a discrete baseline LM: a second "
                                                    "perplexity scorer")
    p.add_argument("--scorer", default=None, metavar="CKPT",
                   help="an independently trained discrete LM: perplexity of every setting under "
                        "it (re-tokenizing the text when its tokenizer differs)")
    p.add_argument("--dexperts", default=None, metavar="POS,NEG",
                   help="two expert checkpoints (positive, negative) with the base's tokenizer: "
                        "DExperts over the base model joins the comparison")
    p.add_argument("--judge", action="append", default=[], metavar="SPEC",
                   help="an extra judge, e.g. hf:<model path>; minilm makes MiniLM required "
                        "(repeatable)")
    p.add_argument("--no-minilm", dest="minilm", action="store_false",
                   help="leave out the MiniLM judge (by default used whenever steerflow[eval] "
                        "is installed)")
    add_data_flags(p, cache=False)
    defaults = SteeringEvalConfig()
    for flag, field, kind, text in _SETTINGS_FLAGS:
        default = getattr(defaults, field)
        p.add_argument(flag, dest=field, type=kind, default=default,
                       help=f"{text} (default {_default_text(default)})")
    p.add_argument("--actadd-vector", choices=ACTADD_VECTORS, default=defaults.actadd_vector,
                   help=f"ActAdd's direction: caa (SST-2 class means) or pairs (six word pairs) "
                        f"(default {defaults.actadd_vector})")
    p.add_argument("--judge-cache", default=None,
                   help="folder to keep the trained SST-2 judge in (the MiniLM head in its "
                        "minilm/ subfolder), reused while the data match (default "
                        "$STEERFLOW_CACHE/judges/sst2-tfidf, else ~/.cache/steerflow/...)")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace):
    """The :class:`SteeringEvalConfig` the flags describe."""
    from steerflow.steer.judges.sst2 import default_judge_cache
    from steerflow.steer.settings import SteeringEvalConfig

    values = {field: getattr(args, field) for _, field, _, _ in _SETTINGS_FLAGS}
    return SteeringEvalConfig(**values, extra_judges=tuple(args.judge), minilm=args.minilm,
                              actadd_vector=args.actadd_vector,
                              judge_cache=args.judge_cache or str(default_judge_cache()),
                              progress=not args.quiet)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from steerflow.cli.common import eprint, print_json
    from steerflow.data import resolve_data_source
    from steerflow.steer.evaluate import evaluate_steering, load_models
    from steerflow.steer.report import markdown, to_json, write_results

    cfg = settings_from_args(args)
    source = resolve_data_source(args.data_dir, require=("wikitext-2", "sst2"))
    log = None if args.quiet else (lambda msg: eprint(f"[eval steering] {msg}"))
    with torch_threads(args.threads):
        experts = args.dexperts.split(",") if args.dexperts is not None else None
        models = load_models(args.checkpoint, args.base, args.ablation, args.baseline,
                             dexperts=experts, scorer=args.scorer)
        results = evaluate_steering(models, source, cfg, log=log)
    out = Path(args.out) if args.out else Path(args.checkpoint) / "eval-steering"
    paths = write_results(results, out)
    if args.json:
        print_json(to_json(results))
    else:
        print(markdown(results))
        print("wrote " + ", ".join(str(p) for p in paths))
    return 0
