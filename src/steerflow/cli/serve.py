"""``steerflow serve CKPT``: a steering playground in the browser (Gradio, on this machine only).

Serve a hybrid checkpoint as a web page: a prompt, one slider per control axis, guidance,
temperature, top-p, max new tokens and seed; the continuation streams in as it is sampled, with
the NFE of each token's ODE solve (training solver, or dopri5 at a tolerance). A side-by-side tab
samples the same prompt and seed at three values of u (default -1, 0, +1); a dynamics tab plots
the next-token candidates against u (paper 1's Fig. 2, for the current prompt) and ||H(tau) -
H(0)|| along tau for the last prompt token. The same functions are API endpoints: /generate
(prompt, u, max_new_tokens, temperature, top_p, seed), /side_by_side and /dynamics, for
gradio_client. Binds 127.0.0.1 unless --host says otherwise; needs the app extra (pip install
"steerflow[app]").
"""

from __future__ import annotations

import argparse

from steerflow.cli.common import add_subcommand, positive_int


def _port(text: str) -> int:
    """argparse ``type=`` for a TCP port."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is in [1, 65535], got {value}")
    return value


def add_parser(sub) -> None:
    p = add_subcommand(sub, "serve", __doc__)
    p.add_argument("checkpoint", help="a hybrid checkpoint folder (config.json, "
                                      "model.safetensors, tokenizer.json)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 opens "
                        "it to the network)")
    p.add_argument("--port", type=_port, default=7860, help="TCP port (default 7860)")
    p.add_argument("--concurrency", type=positive_int, default=2,
                   help="requests computed at once; the rest wait in the queue (default 2)")
    p.add_argument("--max-nfe", type=positive_int, default=1000,
                   help="stop any ODE solve (one per token) past this many vector-field "
                        "evaluations (default 1000)")
    p.add_argument("--max-new-tokens", type=positive_int, default=200,
                   help="the most tokens one request may add (default 200, and less than the "
                        "model's context)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from steerflow.cli.common import torch_threads
    from steerflow.serve.app import build_app, gradio, launch
    from steerflow.serve.session import Limits, Playground

    if not args.host.strip():
        from steerflow.errors import InputError

        raise InputError("--host is empty; give an address such as 127.0.0.1")
    playground = Playground.load(args.checkpoint, Limits(max_nfe=args.max_nfe,
                                                         max_new_tokens=args.max_new_tokens))
    gradio()  # a missing extra is one clear line, before anything starts

    def ready(url: str) -> None:
        print(f"steerflow serve: {args.checkpoint} at {url} (Ctrl-C stops it)", flush=True)
        sys.stdout.flush()

    with torch_threads(args.threads):
        launch(build_app(playground), args.host, args.port, args.concurrency, on_ready=ready)
    return 0
