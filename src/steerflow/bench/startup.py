"""Start-up time of the command line (``steerflow bench --peers``): fresh processes, wall clock.

Three commands, each run in a new Python process, in alternating rounds after one untimed run
each (so the files are in the page cache and the bytecode compiled: a cold *process*, not a
cold disk or a fresh install):

* ``import_s`` — ``python -c "import steerflow"``;
* ``help_s`` — ``steerflow --help``;
* ``time_to_first_token_s`` — ``steerflow generate CKPT --prompt ... --max-new-tokens 1`` on a
  checkpoint of the demo's shape (the ``small`` preset's hybrid, ``tiny`` with ``--quick``;
  random weights and a small byte-level BPE): start, load, tokenize, one token, print;
* ``torch_import_s`` (in the detail) — ``python -c "import torch"``, the floor under the last.

One more run of ``import steerflow`` and of the generate command under ``python -X importtime``
says which heavy modules they import (``torch`` at ``import steerflow``, ``torch._dynamo`` on the
way to the first token).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from steerflow.bench.options import BenchOptions
from steerflow.bench.timing import time_alternating
from steerflow.errors import SteerflowError

PROMPT = "The film was"
#: text for the checkpoint's tokenizer: enough byte pairs for a few dozen merges
_TEXTS = ["the film was good and the plot was great", "the movie was bad and the acting was "
          "awful", "a wonderful story, a terrible ending", "it was the best film of the year"]


class StartupFailed(SteerflowError, RuntimeError):
    """A timed command exited with an error."""


def write_checkpoint(directory: Path, preset: str, seed: int) -> Path:
    """A hybrid of ``preset``'s shape (random weights) with a small BPE, saved in ``directory``."""
    import torch

    from steerflow.config import ModelConfig
    from steerflow.data.tokenizer import train_bpe
    from steerflow.model.gpt import SteerFlowGPT

    torch.manual_seed(seed)
    model = SteerFlowGPT(ModelConfig.from_name(preset))
    model.save_pretrained(directory, tokenizer=train_bpe(_TEXTS * 10, 300))
    return directory


def _environment() -> dict[str, str]:
    """This environment, with steerflow's source folder first on ``PYTHONPATH`` and bytecode
    caching on (an installed package reads the ``.pyc`` files its installer compiled; with
    ``PYTHONDONTWRITEBYTECODE`` set, every fresh process would compile steerflow's sources)."""
    import steerflow

    src = str(Path(steerflow.__file__).resolve().parents[1])
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def steerflow_command() -> list[str]:
    """The ``steerflow`` script beside this interpreter, else ``python -m steerflow``."""
    script = Path(sys.executable).with_name("steerflow")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "steerflow"]


def commands(checkpoint: Path) -> dict[str, list[str]]:
    """The three timed command lines, by figure name."""
    cli = steerflow_command()
    return {"torch_import_s": [sys.executable, "-c", "import torch"],
            "import_s": [sys.executable, "-c", "import steerflow"],
            "help_s": cli + ["--help"],
            "time_to_first_token_s": cli + ["generate", str(checkpoint), "--prompt", PROMPT,
                                            "--max-new-tokens", "1"]}


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    out = subprocess.run(argv, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise StartupFailed(f"{' '.join(argv[:3])} ... exited with {out.returncode}: {tail}")
    return out


def imported(argv: list[str], env: dict[str, str], modules: tuple[str, ...]) -> dict[str, bool]:
    """Whether running ``argv`` (a Python command line) imports each of ``modules``."""
    python = [sys.executable, "-X", "importtime"]
    rest = argv[1:] if argv[0] == sys.executable else ["-m", "steerflow", *argv[1:]]
    stderr = _run(python + rest, env).stderr
    names = {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines()
             if line.startswith("import time:")}
    return {module: module in names for module in modules}


def run_startup(opts: BenchOptions) -> dict:
    """Wall time of each command, the median over ``startup_reps`` processes:
    ``{"startup": {...}}``."""
    env = _environment()
    preset = "tiny" if opts.quick else "small"
    with tempfile.TemporaryDirectory(prefix="steerflow-startup-") as tmp:
        argvs = commands(write_checkpoint(Path(tmp) / "model", preset, opts.seed))

        def call(argv: list[str]) -> Callable[[], object]:
            return lambda: _run(argv, env)

        # wall clock whatever --clock says: a child's time is not this process's CPU time
        t = time_alternating({k: call(v) for k, v in argvs.items()}, opts.startup_reps, 1,
                             "cpu", "wall")
        loads = {"import": imported(argvs["import_s"], env, ("torch",)),
                 "generate": imported(argvs["time_to_first_token_s"], env,
                                      ("torch", "torch._dynamo", "transformers"))}
        shown = {k: shlex.join([Path(v[0]).name] + [a.replace(tmp, "TMP") for a in v[1:]])
                 for k, v in argvs.items()}
    return {"startup": {
        **{name: t[name].median for name in argvs if name != "torch_import_s"},
        "detail": {"s": {name: t[name].as_dict(1.0, "s") for name in argvs},
                   "torch_import_s": t["torch_import_s"].median,
                   "commands": shown, "checkpoint": f"{preset} preset hybrid, random weights",
                   "imports": loads,
                   "threads": os.environ.get("OMP_NUM_THREADS", "torch's default")},
    }}
