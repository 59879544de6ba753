"""``steerflow export CKPT --to transformers``: write a checkpoint in the transformers layout.

A discrete checkpoint becomes a plain GPT2LMHeadModel folder: AutoModelForCausalLM.from_pretrained
gives the same logits and pipeline("text-generation") runs on it, without steerflow. A hybrid
becomes a folder with remote code (auto_map in config.json and modeling_steerflow.py, which
imports steerflow), loaded with trust_remote_code=True; its generate(..., u=...) steers. The
tokenizer saved with the checkpoint comes along; weights stay safetensors.
"""

from __future__ import annotations

import argparse

from steerflow.cli.common import add_common_flags, add_subcommand


def add_parser(sub) -> None:
    p = add_subcommand(sub, "export", __doc__)
    p.add_argument("checkpoint", help="a checkpoint folder (config.json + model.safetensors)")
    p.add_argument("--to", choices=["transformers"], required=True,
                   help="the layout to write: transformers")
    add_common_flags(p, out="folder for the exported model", out_required=True, device=None,
                     threads=False, json="print what was written as one JSON object",
                     quiet=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from steerflow.cli.common import print_json
    from steerflow.model.hub import load_model

    model = load_model(args.checkpoint)
    model.save_pretrained(args.out, format=args.to)
    hybrid = model.config.is_hybrid
    info = {"checkpoint": args.checkpoint, "out": args.out, "to": args.to,
            "architecture": "SteerFlowForCausalLM" if hybrid else "GPT2LMHeadModel",
            "trust_remote_code": hybrid, "tokenizer": model.tokenizer is not None,
            "files": sorted(p.name for p in Path(args.out).iterdir() if p.is_file())}
    if args.json:
        print_json(info)
        return 0
    load = (f"AutoModelForCausalLM.from_pretrained({args.out!r}"
            f"{', trust_remote_code=True' if hybrid else ''})")
    print(f"exported {args.checkpoint} -> {args.out} as {info['architecture']}: {load}")
    if not info["tokenizer"]:
        print("  note: the checkpoint has no tokenizer; none was exported")
    return 0
