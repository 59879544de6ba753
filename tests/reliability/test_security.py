"""Security: nothing is unpickled, nothing is written outside the paths the user gave (and the
documented cache), output folders are never wiped, and the network is touched only when asked.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from steerflow.errors import CheckpointError
from steerflow.model.gpt import SteerFlowGPT
from steerflow.train import checkpoint as ckpt

SRC = Path(__file__).resolve().parents[2] / "src"


# ------------------------------------------------------------------ no pickle is ever executed
def test_the_payload_is_live(zoo, evil_pickle, tmp_path):
    """Control for the tests below: loading the payload the unsafe way does run code, so a loader
    that unpickled it would create the marker and fail them."""
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    path.write_bytes(evil_pickle(marker))
    torch.load(path, weights_only=False)
    assert marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # the safe way refuses it
        torch.load(path, weights_only=True)


def test_pickled_checkpoints_are_refused_by_every_loader(zoo, cli):
    """A pickle named pytorch_model.bin, or disguised as model.safetensors, is refused by the
    library and by each command that loads a checkpoint; the payload never runs."""
    for folder in (zoo.pickle_only, zoo.pickle_renamed):
        with pytest.raises(CheckpointError):
            SteerFlowGPT.from_pretrained(folder)
        for argv in (["generate", folder, "--prompt", "x"], ["info", folder],
                     ["eval", "invariance", folder, "--data-dir", zoo.data, "--quiet"],
                     ["analyze", "flow", folder, "--data-dir", zoo.data, "--quiet"]):
            assert cli(argv).code == 2, argv
    assert not zoo.marker.exists()


def test_malicious_optimizer_state_is_refused_on_resume(zoo, cli, evil_pickle, tmp_path,
                                                        single_thread):
    """``state.pt`` (optimizer, scheduler, RNG) replaced by a pickle whose unpickling runs code:
    ``--resume`` refuses it (torch.load(weights_only=True)) with one line naming the file, and
    the code never runs."""
    run, marker = tmp_path / "run", tmp_path / "ran"
    argv = ["train", "--config", "tiny", "--tokenizer", "bpe:300", "--data-dir", zoo.data,
            "--cache-dir", zoo.cache, "--out", run, "--steps", "2", "--save-every", "1",
            "--keep-checkpoints", "1", "--batch-size", "2", "--eval-batches", "1",
            "--test-batches", "1", "--threads", "1", "--quiet"]
    assert cli(argv).code == 0
    refs = ckpt.list_checkpoints(run)
    assert [r.step for r in refs] == [2]
    (refs[-1].path / ckpt.STATE_FILE).write_bytes(evil_pickle(marker))
    result = cli([*argv, "--resume"])
    assert result.code == 2 and "Traceback" not in result.err, result.err
    assert len(result.err_lines) == 1 and ckpt.STATE_FILE in result.err
    assert not marker.exists()


_UNSAFE = {("torch", "load"), ("pickle", "load"), ("pickle", "loads"), ("np", "load"),
           ("numpy", "load"), ("joblib", "load"), ("yaml", "load"), ("dill", "load"),
           ("dill", "loads"), ("marshal", "loads")}


def _unsafe_calls(path: Path) -> list[str]:
    """Calls in ``path`` that could unpickle untrusted data: ``torch.load`` without
    ``weights_only=True``, ``np.load`` without ``allow_pickle=False``, any pickle/joblib/yaml/dill
    loader, ``eval`` and ``exec``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("eval", "exec"):
            found.append(f"{path.name}:{node.lineno} {func.id}()")
        if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)):
            continue
        if (func.value.id, func.attr) not in _UNSAFE:
            continue
        kwargs = {k.arg: k.value for k in node.keywords}
        safe = {"torch": ("weights_only", True), "np": ("allow_pickle", False),
                "numpy": ("allow_pickle", False)}.get(func.value.id)
        if safe and isinstance(kwargs.get(safe[0]), ast.Constant) and kwargs[safe[0]].value is safe[1]:
            continue
        found.append(f"{path}:{node.lineno} {func.value.id}.{func.attr}()")
    return found


def test_the_package_has_no_unsafe_deserialisation(tmp_path):
    """A static check of every module: weights only through safetensors, other state only through
    ``torch.load(weights_only=True)`` / ``np.load(allow_pickle=False)``, no eval/exec."""
    files = sorted((SRC / "steerflow").rglob("*.py"))
    assert len(files) > 20
    unsafe = [call for f in files for call in _unsafe_calls(f)]
    assert unsafe == []
    # the checker itself sees an unsafe call when there is one
    probe = tmp_path / "probe.py"
    probe.write_text("import numpy as np, torch\ntorch.load('x')\ntorch.load('x', weights_only=True)\n"
                     "np.load('y')\nnp.load('y', allow_pickle=False)\neval('1')\n")
    assert [c.split(" ")[-1] for c in _unsafe_calls(probe)] == ["torch.load()", "np.load()", "eval()"]


# ------------------------------------------------------------------ no writes outside given paths
_RUNNER = r'''
import json, os, sys
events = []
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _p(x):
    return os.path.abspath(os.fsdecode(x)) if isinstance(x, (str, bytes, os.PathLike)) else None


def hook(event, args):
    if event == "open":
        path, mode, flags = args
        p = _p(path)
        if p and ((isinstance(mode, str) and any(c in mode for c in "wax+"))
                  or (isinstance(flags, int) and flags & WRITE)):
            events.append(["write", p])
    elif event in ("os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate",
                   "os.chmod", "os.symlink", "os.link", "os.utime"):
        events.append([event, _p(args[0])])
    elif event == "os.rename":
        events.extend([[event, _p(args[0])], [event, _p(args[1])]])
    elif event.startswith(("socket.", "urllib.", "http.")):
        events.append([event, repr(args)[:200]])


sys.addaudithook(hook)
from steerflow.cli.main import main

codes = [main(argv) for argv in json.loads(sys.argv[1])]
seen = list(events)
modules = sorted(m for m in ("datasets", "huggingface_hub", "requests") if m in sys.modules)
with open(sys.argv[2], "w") as fh:
    json.dump({"codes": codes, "events": seen, "modules": modules}, fh)
'''


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _within(path: str, roots: list[Path]) -> bool:
    return any(path == str(r) or path.startswith(str(r) + os.sep) for r in roots)


def test_train_and_generate_write_only_into_out_and_the_cache(zoo, tmp_path):
    """A real ``steerflow train`` then ``steerflow generate``, in a subprocess whose HOME, working
    directory and TMPDIR are empty temporary folders, with Python's audit hooks recording every
    file opened for writing, renamed, removed or created and every socket use:

    * every write lands in --out or in the documented cache ``$HOME/.cache/steerflow``
      (TMPDIR only for the interpreter's and torch's own transient files, gone afterwards);
    * a file that was in --out before the run is still there, unchanged;
    * the data folder is left byte-for-byte untouched, the working directory stays empty;
    * no socket is opened and neither ``datasets`` nor ``huggingface_hub`` is imported.
    """
    home, cwd, tmp, out = (tmp_path / n for n in ("home", "cwd", "tmp", "out"))
    for folder in (home, cwd, tmp, out):
        folder.mkdir()
    (out / "notes.txt").write_text("mine, keep it\n")
    data_before = _tree(zoo.data)
    argv = [["train", "--config", "tiny", "--tokenizer", "bpe:300", "--data-dir", str(zoo.data),
             "--out", str(out), "--steps", "2", "--batch-size", "2", "--eval-batches", "1",
             "--test-batches", "1", "--threads", "1", "--quiet"],
            ["generate", str(out), "--prompt", "the film was", "--max-new-tokens", "3", "--json"]]
    # a bare environment: no STEERFLOW_*/HF_* settings, nor TORCHINDUCTOR_CACHE_DIR (torch sets it
    # in this process when torch._dynamo is imported, pointing at the real /tmp)
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL") if k in os.environ}
    env.update(HOME=str(home), TMPDIR=str(tmp), PYTHONPATH=str(SRC), PYTHONDONTWRITEBYTECODE="1",
               OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(argv), str(report)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(report.read_text())
    assert result["codes"] == [0, 0]
    assert json.loads(proc.stdout.splitlines()[-1])["tokens"]  # generate printed its sample

    cache = home / ".cache" / "steerflow"
    allowed = [out, cache, Path("/dev/null")]
    network = [e for e in result["events"] if e[0].startswith(("socket.", "urllib.", "http."))]
    assert network == [] and result["modules"] == []
    for event, path in result["events"]:
        if event == "os.mkdir" and not _within(path, allowed + [tmp]):
            # mkdir(parents=True, exist_ok=True) probes the parents of --out and of the cache
            assert any(str(r).startswith(path + os.sep) for r in allowed), (event, path)
        else:
            assert _within(path, allowed + [tmp]), (event, path)

    assert (out / "notes.txt").read_text() == "mine, keep it\n"  # created, never wiped
    assert (out / "model.safetensors").is_file() and any(cache.iterdir())
    assert [p for p in home.rglob("*") if p.is_file() and not _within(str(p), [cache])] == []
    assert list(cwd.iterdir()) == []
    assert [p for p in tmp.rglob("*") if p.is_file()] == []  # only transient files in TMPDIR
    assert _tree(zoo.data) == data_before


def test_commands_never_wipe_an_existing_output_folder(zoo, cli, tmp_path, single_thread):
    """Files already in --out survive a successful run and a failed one."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "results.json").write_text("{}")  # even a name the command itself writes
    ok = cli(["eval", "invariance", zoo.hybrid, "--data-dir", zoo.data, "--cache-dir", zoo.cache,
              "--batches", "1", "--batch-size", "2", "--controls", "0", "--tolerances", "1e-3",
              "--steps", "4", "--out", out, "--quiet", "--json"])
    assert ok.code == 0, ok.err
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "results.json").read_text()) == json.loads(ok.out)  # replaced whole
    failed = cli(["train", "--config", "tiny", "--out", out, "--data-dir", zoo.missing, "--quiet"])
    assert failed.code == 2 and (out / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------ network access is opt-in
class _Network:
    """Replaces socket connections with a recorder that refuses them."""

    def __init__(self, monkeypatch):
        self.attempts: list[tuple] = []

        def refuse(*args, **kwargs):
            self.attempts.append(args[1:] if args else kwargs)
            raise OSError(101, "Network is unreachable (blocked by the test)")

        monkeypatch.setattr(socket.socket, "connect", refuse)
        monkeypatch.setattr(socket, "create_connection", refuse)
        monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def offline(monkeypatch) -> _Network:
    return _Network(monkeypatch)


def test_no_data_and_no_datasets_names_the_three_options(cli, offline, monkeypatch, tmp_path):
    """Without --data-dir, $STEERFLOW_DATA or the optional ``datasets`` package, every
    data-reading command says the three ways to provide data, and nothing tries the network."""
    monkeypatch.delenv("STEERFLOW_DATA", raising=False)
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now fails
    for argv in (["train", "--config", "tiny", "--out", tmp_path / "t", "--quiet"],
                 ["demo", "--config", "tiny", "--out", tmp_path / "d", "--quiet"],
                 ["experiment", "gradient-stability", "--config", "tiny", "--out", tmp_path / "e",
                  "--quiet"]):
        result = cli(argv)
        assert result.code == 2 and len(result.err_lines) == 1, result.err
        for option in ("--data-dir", "STEERFLOW_DATA", "pip install steerflow[hub]"):
            assert option in result.err, (option, result.err)
    assert offline.attempts == []


def test_a_plain_repo_name_is_a_local_path_and_never_downloaded(zoo, cli, offline, monkeypatch,
                                                                 tmp_path):
    """``from_pretrained("user/repo")`` without ``hf:`` looks only on disk (and says how to ask
    for the Hub); with ``hf:`` it downloads — offline that is one clear line, not a traceback."""
    monkeypatch.chdir(tmp_path)  # "user/repo" resolves against an empty working directory
    calls = []
    import huggingface_hub

    real = huggingface_hub.snapshot_download
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    with pytest.raises(CheckpointError, match="hf:user/repo"):
        SteerFlowGPT.from_pretrained("user/repo")
    plain = cli(["generate", "user/repo", "--prompt", "x"])
    assert plain.code == 2 and "hf:user/repo" in plain.err
    assert calls == [] and offline.attempts == []

    hub = cli(["generate", "hf:user/repo", "--prompt", "x"])
    assert calls == [("user/repo",)]  # asked for by name: now the Hub is tried
    assert hub.code == 2 and len(hub.err_lines) == 1 and "Traceback" not in hub.err
    assert "not downloadable from the Hugging Face Hub" in hub.err
