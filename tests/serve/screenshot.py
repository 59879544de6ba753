"""Make the README's screenshot of the playground: the browser test's steps, on the same tiny
checkpoint (trained in a few seconds), the whole page saved as a PNG.

    python -m tests.serve.screenshot docs/img/playground.png [--checkpoint CKPT]

Needs what the browser test needs (``chromium``, ``chromium-driver``, ``pip install -e
'.[test]'``); run it from the repository root.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from .harness import browser_missing, chromium, serving, steered_tiny, walkthrough


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.serve.screenshot", description=__doc__)
    p.add_argument("out", type=Path, help="the PNG to write")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="serve this checkpoint instead of the test's tiny one")
    args = p.parse_args(argv)
    missing = browser_missing()
    if missing:
        print(f"screenshot: no headless browser: {missing}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or steered_tiny(Path(tmp) / "steered")
        with serving(checkpoint) as (url, _), chromium() as driver:
            seen = walkthrough(driver, url, args.out)
    print(f"screenshot: {seen['screenshot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
