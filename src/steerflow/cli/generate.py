"""``steerflow generate CKPT``: continue prompts under a control u (sampling, KV cache).

Continue one prompt (--prompt) or a file of prompts (--prompts-file: JSON lines with a "prompt"
field, or plain text, one per line) under the control u, with the tokenizer saved in the checkpoint.
--json prints one JSON object per sample: prompt, u, sample, text (the continuation only) and
tokens.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
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
                                            "for control_dim > 1 (default 0)")
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
    """Load the checkpoint, encode the prompts and print the samples."""
    import torch

    from steerflow.config import SolverSpec
    from steerflow.errors import InputError
    from steerflow.steer.prompts import encode_prompts, read_prompts_file

    u = _control(args.u)
    solver = SolverSpec.parse(args.solver) if args.solver else None
    prompts = [args.prompt] if args.prompt is not None else read_prompts_file(args.prompts_file)
    model = _load(args)
    c = model.config.control_dim
    if model.config.is_hybrid and len(u) not in (1, c):
        raise InputError(f"--u has {len(u)} values; the model's control_dim is {c}")
    if not model.config.is_hybrid and any(u):
        raise InputError("this checkpoint is a discrete baseline without control; use --u 0")
    control = (u * c if len(u) == 1 else u) if model.config.is_hybrid else None
    tok = model.tokenizer
    block = model.config.block_size
    if args.max_new_tokens >= block:
        raise InputError(f"--max-new-tokens {args.max_new_tokens} leaves no room for a prompt in "
                         f"the model's context of {block} tokens; use at most {block - 1}")
    ids = encode_prompts(tok, prompts, block - args.max_new_tokens)
    for p, (prompt, prompt_ids) in enumerate(zip(prompts, ids)):
        idx = torch.tensor([prompt_ids]).repeat(args.samples, 1)  # (K, T)
        out = model.generate(idx, control, args.max_new_tokens, temperature=args.temperature,
                             top_k=args.top_k, top_p=args.top_p, greedy=args.greedy,
                             seed=args.seed + p, solver=solver)
        for k, row in enumerate(out[:, len(prompt_ids):].tolist()):
            _emit(args, prompt, control, k, tok.decode(row), row)
    return 0


def _emit(args, prompt: str, u, sample: int, text: str, tokens: list[int]) -> None:
    if args.json:
        record = {"prompt": prompt, "u": u, "sample": sample, "text": text, "tokens": tokens}
        sys.stdout.write(json.dumps(record) + "\n")
    else:
        print(f"[{sample}] {prompt}\033[1m{text}\033[0m" if sys.stdout.isatty() else
              f"[{sample}] {prompt}{text}")
