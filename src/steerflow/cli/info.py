"""``steerflow info``: layer layout and parameter counts of a preset config or a checkpoint.

Print the layer layout and parameter counts (total, ODE block, embeddings) of a named preset or a
saved checkpoint folder.
"""

from __future__ import annotations

import argparse
from steerflow.cli.common import add_subcommand


def add_parser(sub) -> None:
    p = add_subcommand(sub, "info", __doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("checkpoint", nargs="?", help="a checkpoint folder (config.json + model.safetensors)")
    src.add_argument("--config", help="a preset name: tiny, small, paper, gpt2")
    p.add_argument("--model", choices=["baseline", "hybrid"], default="hybrid",
                   help="with --config: the discrete baseline or the hybrid (default)")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from steerflow.cli.common import print_json
    from steerflow.io import format_table
    from steerflow.config import ModelConfig
    from steerflow.model.gpt import SteerFlowGPT
    from steerflow.model.hub import read_config

    if args.config:
        config = ModelConfig.from_name(args.config)
        if args.model == "baseline":
            config = config.as_baseline()
        source = f"preset {args.config!r} ({args.model})"
    else:
        config = read_config(args.checkpoint)
        source = str(args.checkpoint)
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = SteerFlowGPT(config)
    if args.checkpoint:
        check_weights_header(args.checkpoint, model)
    counts = model.param_counts()
    info = {
        "source": source,
        "params": counts.total,
        "ode_params": counts.ode,
        "embedding_params": counts.embeddings,
        "head_params": counts.head,
        "layers": config.layer_layout(),
        "per_layer_params": counts.per_layer,
        "config": config.to_dict(),
    }
    if args.json:
        print_json(info)
        return 0
    print(f"steerflow model from {source}")
    print(f"  d={config.n_embd}, heads={config.n_head}, context={config.block_size}, "
          f"vocab={config.vocab_size}, {'tied' if config.tie_weights else 'untied'} head")
    if config.is_hybrid:
        print(f"  ODE block: field={config.field}, injection={config.injection}, "
              f"width={config.field_hidden}, α={config.alpha_init} ({config.alpha_shape}), "
              f"train solver {config.train_solver.describe()}, eval solver "
              f"{config.eval_solver.describe()}")
    rows = [(name, f"{n:,}") for name, n in counts.per_layer.items()]
    print(format_table(["layer", "params"], rows))
    print(f"total {counts.total:,} | ODE block {counts.ode:,} | embeddings "
          f"{counts.embeddings:,} | LM head {counts.head:,}")
    return 0


def check_weights_header(directory, model) -> None:
    """Check that ``model.safetensors`` is complete and has ``model``'s shapes, reading only its
    header (no tensor data), so ``info`` reports on a checkpoint that would actually load.

    Raises:
        CheckpointError: the file is missing, truncated or not safetensors, or a tensor is missing,
            unexpected or of another shape (the message names the file).
    """
    from pathlib import Path

    from safetensors import SafetensorError, safe_open

    from steerflow.errors import CheckpointError
    from steerflow.model.hub import CONFIG_NAME, WEIGHTS_NAME

    weights = Path(directory) / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    try:
        with safe_open(str(weights), framework="pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: unreadable or truncated safetensors file ({exc})") from None
    aliases: dict[int, list[str]] = {}  # tied parameters are stored once, under either name
    for name, tensor in model.state_dict(keep_vars=True).items():
        aliases.setdefault(id(tensor), []).append(name)
    expected = {name: tuple(model.state_dict(keep_vars=True)[name].shape)
                for names in aliases.values() for name in names}
    missing = [names[0] for names in aliases.values() if not any(n in stored for n in names)]
    unexpected = sorted(set(stored) - set(expected))
    wrong = [f"{k} {stored[k]} vs {expected[k]}" for k in sorted(stored) if k in expected
             and stored[k] != expected[k]]
    if missing or unexpected or wrong:
        detail = (f"size mismatch {wrong[:2]}" if wrong else
                  f"missing {sorted(missing)[:3]}, unexpected {unexpected[:3]}")
        raise CheckpointError(f"{weights}: weights do not match {CONFIG_NAME} ({detail})")
