"""``steerflow generate CKPT``: continue prompts under a control u (sampling, KV cache).

Continue one prompt (--prompt) or a file of prompts (--prompts-file: JSON lines with a "prompt"
field, or plain text, one per line) under the control u, with the tokenizer saved in the checkpoint.
--guidance G samples z(0) + G (z(u) - z(-u)) on the nucleus of z(0) instead (guidance over u; G = 0
is plain sampling at u = 0). --dexperts POS,NEG --alpha A samples DExperts, z_base + A (z_pos -
z_neg) with CKPT as the base, all three at u = 0, towards POS for --u > 0 and towards NEG for --u <
0 (--u 0: the base alone). --json prints one JSON object per sample: prompt, u, sample, text (the
continuation only) and tokens, plus guidance or dexperts (the experts, alpha and direction) when
used.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Optional

from steerflow.cli.common import add_subcommand


def _control(text: str) -> list[float]:
    """``--u``: one number, or comma-separated numbers for control_dim > 1."""
    from steerflow.errors import InputError

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"--u {text!r}: expected a number or comma-separated numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"--u {text!r}: values must be finite")
    return values


def add_parser(sub) -> None:
    p = add_subcommand(sub, "generate", __doc__)
    p.add_argument("checkpoint", help="a checkpoint folder (config.json, model.safetensors, "
                                      "tokenizer.json)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt")
    src.add_argument("--prompts-file", help="JSON lines with a \"prompt\" field, or plain text")
    p.add_argument("--u", default="0", help="the control: a number, or comma-separated numbers "
                                            "for control_dim > 1, each |u| <= 1e4 (default 0)")
    p.add_argument("--samples", type=int, default=1, help="samples per prompt (default 1)")
    p.add_argument("--max-new-tokens", type=int, default=20, help="tokens to add (default 20)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature > 0")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass in (0, 1]")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens")
    p.add_argument("--greedy", action="store_true", help="argmax decoding (ignores sampling flags)")
    p.add_argument("--seed", type=int, default=0, help="random seed: same seed, same output")
    p.add_argument("--solver", default=None,
                   help="ODE solver at inference, e.g. euler:4, rk4:8, dopri5:1e-4 "
                        "(default: the checkpoint's eval solver)")
    steer = p.add_mutually_exclusive_group()
    steer.add_argument("--guidance", type=float, metavar="G",
                       help="sample z(0) + G (z(u) - z(-u)) on the nucleus of z(0): guidance over "
                            "u, G >= 0, hybrid checkpoints only (default: plain sampling at u)")
    steer.add_argument("--dexperts", metavar="POS_CKPT,NEG_CKPT",
                       help="DExperts: CKPT is the base, these the expert and anti-expert (one "
                            "tokenizer for all three); --u's sign picks the direction")
    p.add_argument("--alpha", type=float, default=None, metavar="A",
                   help="--dexperts: the weight A >= 0 of z_pos - z_neg (default 1)")
    p.add_argument("--json", action="store_true", help="one JSON object per sample, nothing else")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is fastest for small "
                        "models on a busy machine)")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    from steerflow.errors import InputError

    if not (math.isfinite(args.temperature) and args.temperature > 0):
        raise InputError(f"--temperature must be > 0, got {args.temperature}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise InputError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.top_k is not None and args.top_k < 1:
        raise InputError(f"--top-k must be >= 1, got {args.top_k}")
    for name in ("samples", "max_new_tokens"):
        if getattr(args, name) < (1 if name == "samples" else 0):
            raise InputError(f"--{name.replace('_', '-')} must be "
                             f"{'>= 1' if name == 'samples' else '>= 0'}, got {getattr(args, name)}")
    if not 0 <= args.seed < 2 ** 63:  # prompt p is sampled with seed + p: stay in torch's range
        raise InputError(f"--seed must be in [0, 2**63), got {args.seed}")
    for flag, value in (("--guidance", args.guidance), ("--alpha", args.alpha)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise InputError(f"{flag} must be a finite number >= 0, got {value}")
    if args.alpha is not None and args.dexperts is None:
        raise InputError("--alpha weighs the DExperts experts; give them with --dexperts POS,NEG")
    if args.dexperts is not None:
        _experts(args.dexperts)


def _experts(text: str) -> tuple[str, str]:
    """``--dexperts POS,NEG`` → the two checkpoint folders."""
    from steerflow.errors import InputError

    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise InputError(f"--dexperts {text!r}: expected two checkpoint folders, POS_CKPT,NEG_CKPT")
    return parts[0].strip(), parts[1].strip()


def _load(args: argparse.Namespace):
    from steerflow.model.hub import load_model
    from steerflow.errors import CheckpointError

    model = load_model(args.checkpoint)
    if model.tokenizer is None:
        raise CheckpointError(f"{args.checkpoint}: no tokenizer.json; generate needs the tokenizer "
                              f"saved with the model")
    return model


def run(args: argparse.Namespace) -> int:
    from steerflow.cli.common import torch_threads

    _check_args(args)
    with torch_threads(args.threads):
        return _generate(args)


def _generate(args: argparse.Namespace) -> int:
    """Load the checkpoint(s), encode the prompts and print the samples."""
    import torch

    from steerflow.config import SolverSpec
    from steerflow.errors import InputError
    from steerflow.steer.prompts import encode_prompts, read_prompts_file

    u = _control(args.u)
    solver = SolverSpec.parse(args.solver) if args.solver else None
    prompts = [args.prompt] if args.prompt is not None else read_prompts_file(args.prompts_file)
    if args.dexperts is not None:
        sampler, model, control, extra = _dexperts_sampler(args, u, solver)
    else:
        model = _load(args)
        control = _model_control(args, model, u)
        extra = {} if args.guidance is None else {"guidance": args.guidance}

        def sampler(idx, seed):
            return model.generate(idx, control, args.max_new_tokens, **_sampling(args, seed),
                                  solver=solver, guidance=args.guidance)
    tok = model.tokenizer
    block = model.config.block_size
    if args.max_new_tokens >= block:
        raise InputError(f"--max-new-tokens {args.max_new_tokens} leaves no room for a prompt in "
                         f"the model's context of {block} tokens; use at most {block - 1}")
    ids = encode_prompts(tok, prompts, block - args.max_new_tokens)
    for p, (prompt, prompt_ids) in enumerate(zip(prompts, ids)):
        idx = torch.tensor([prompt_ids]).repeat(args.samples, 1)  # (K, T)
        out = sampler(idx, args.seed + p)
        for k, row in enumerate(out[:, len(prompt_ids):].tolist()):
            _emit(args, prompt, control, k, tok.decode(row), row, extra)
    return 0


def _sampling(args: argparse.Namespace, seed: int) -> dict:
    return dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                greedy=args.greedy, seed=seed)


def _model_control(args: argparse.Namespace, model, u: list[float]) -> Optional[list[float]]:
    """The model's control from --u (None for a discrete model), checked against --guidance."""
    from steerflow.errors import InputError

    c = model.config.control_dim
    if model.config.is_hybrid and len(u) not in (1, c):
        raise InputError(f"--u has {len(u)} values; the model's control_dim is {c}")
    if not model.config.is_hybrid and args.guidance is not None:
        raise InputError(f"{args.checkpoint} is a discrete baseline without a control; --guidance "
                         f"contrasts the model at u and -u and needs a hybrid checkpoint")
    if not model.config.is_hybrid and any(u):
        raise InputError("this checkpoint is a discrete baseline without control; use --u 0")
    return (u * c if len(u) == 1 else u) if model.config.is_hybrid else None


def _dexperts_sampler(args: argparse.Namespace, u: list[float], solver):
    """``(sample(idx, seed), base, [u], json fields)`` for --dexperts: the direction is the sign
    of u."""
    from steerflow.errors import CheckpointError, InputError
    from steerflow.steer.dexperts import DExperts

    if len(u) != 1:
        raise InputError(f"--dexperts steers one way: --u takes one number (its sign picks the "
                         f"expert), got {len(u)} values")
    pos, neg = _experts(args.dexperts)
    steer = DExperts.load(args.checkpoint, pos, neg)
    if steer.tokenizer is None:
        raise CheckpointError(f"{args.checkpoint}: no tokenizer.json; generate needs the "
                              f"tokenizer saved with the model")
    direction = (u[0] > 0) - (u[0] < 0)
    alpha = 1.0 if args.alpha is None else args.alpha

    def sample(idx, seed):
        return steer.generate(idx, direction, args.max_new_tokens, alpha=alpha,
                              **_sampling(args, seed), solver=solver)
    extra = {"dexperts": {"expert": pos, "anti_expert": neg, "alpha": alpha,
                          "direction": direction}}
    return sample, steer.base, u, extra


def _emit(args, prompt: str, u, sample: int, text: str, tokens: list[int],
          extra: Optional[dict] = None) -> None:
    if args.json:
        record = {"prompt": prompt, "u": u, "sample": sample, "text": text, "tokens": tokens,
                  **(extra or {})}
        sys.stdout.write(json.dumps(record) + "\n")
    else:
        print(f"[{sample}] {prompt}\033[1m{text}\033[0m" if sys.stdout.isatty() else
              f"[{sample}] {prompt}{text}")
