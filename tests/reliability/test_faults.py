"""Faults that must be survived: a crash or a failing disk while a checkpoint is written, a damaged
newest checkpoint, and stiff or diverging ODEs under adaptive solvers.

Kill -9 during training, non-finite losses/gradients and interrupted demo stages have their tests
beside the code they exercise (tests/train/test_resume.py, tests/train/test_events.py,
tests/pipeline/test_stages.py); docs/reliability.md lists them all.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from steerflow.config import SolverSpec
from steerflow.errors import CheckpointError, SolverError
from steerflow.model.gpt import SteerFlowGPT
from steerflow.train import checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("single_thread")

STEPS, SAVE_EVERY = 6, 2


def _train_argv(zoo, out: Path, *extra: str) -> list[str]:
    """A 6-step tiny run that checkpoints at steps 2, 4 and 6 (under a second)."""
    return ["train", "--config", "tiny", "--tokenizer", "bpe:300", "--data-dir", str(zoo.data),
            "--cache-dir", str(zoo.cache), "--out", str(out), "--steps", str(STEPS),
            "--save-every", str(SAVE_EVERY), "--batch-size", "4", "--eval-batches", "1",
            "--test-batches", "1", "--threads", "1", "--device", "cpu", "--quiet", *extra]


@pytest.fixture(scope="module")
def reference(zoo, tmp_path_factory) -> dict[str, torch.Tensor]:
    """Final weights of the uninterrupted run: what every resumed run must reproduce bit for bit."""
    from steerflow.cli.main import main

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reference") / "run"
    try:
        assert main(_train_argv(zoo, out)) == 0
    finally:
        torch.set_num_threads(before)
    return load_file(str(out / "model.safetensors"))


def _fail_commit_at(monkeypatch, step: int, exc: BaseException) -> None:
    """Make the checkpoint of ``step`` fail after all its files are written, before the rename."""
    real = ckpt._commit

    def commit(tmp: Path, final: Path) -> None:
        if final.name == f"step_{step:06d}":
            assert {p.name for p in tmp.iterdir()} == {ckpt.MODEL_FILE, ckpt.STATE_FILE,
                                                       ckpt.TRAINER_FILE}  # fully written
            raise exc
        real(tmp, final)

    monkeypatch.setattr(ckpt, "_commit", commit)


def _assert_loadable(run: Path, step: int) -> None:
    """The newest complete checkpoint is ``step`` and it loads (weights, optimizer state, RNG)."""
    from steerflow.data import Tokenizer
    from steerflow.train import TrainConfig
    from steerflow.train.optim import param_groups

    refs = ckpt.list_checkpoints(run)
    assert refs and refs[-1].step == step, refs
    cfg = TrainConfig.from_json(run / "train_config.json")
    model = SteerFlowGPT(cfg.model_config(Tokenizer.load(run).vocab_size))
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay))
    assert ckpt.load_checkpoint(refs[-1].path, model, optimizer, restore_rng=False)["step"] == step
    assert not list(ckpt.checkpoint_root(run).glob(".tmp-*"))  # nothing half-written left behind


def _assert_same_weights(run: Path, reference: dict[str, torch.Tensor]) -> None:
    final = load_file(str(run / "model.safetensors"))
    assert final.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(final[name], tensor), name  # bit for bit: same seed, same data order


def test_crash_between_temporary_write_and_rename_then_resume_is_exact(zoo, cli, reference,
                                                                         monkeypatch, tmp_path):
    """Ctrl-C (or a crash) after the step-4 files are written but before their rename: the run
    stops, step 2 stays the newest valid checkpoint, and ``--resume`` ends with the weights of an
    uninterrupted run."""
    run = tmp_path / "run"
    _fail_commit_at(monkeypatch, 4, KeyboardInterrupt())
    result = cli(_train_argv(zoo, run))
    assert result.code == 130 and "Traceback" not in result.err
    assert not (run / "model.safetensors").exists()  # no final model from a stopped run
    # the loop saves nothing else on the way out, so the newest checkpoint is step 2 — loadable
    assert [r.step for r in ckpt.list_checkpoints(run)] == [2]
    monkeypatch.undo()
    _assert_loadable(run, 2)
    assert cli(_train_argv(zoo, run, "--resume")).code == 0
    _assert_same_weights(run, reference)


@pytest.mark.parametrize("code, cause", [(errno.EROFS, "Read-only file system"),
                                         (errno.ENOSPC, "No space left on device")])
def test_disk_failure_while_checkpointing_names_path_and_cause(zoo, cli, reference, monkeypatch,
                                                               tmp_path, code, cause):
    """A read-only or full disk at the step-4 checkpoint: exit 2 with one line naming the folder
    and the OS's reason; step 2 stays valid; once the disk is fixed, ``--resume`` finishes exactly."""
    run = tmp_path / "run"
    _fail_commit_at(monkeypatch, 4, OSError(code, os.strerror(code)))
    result = cli(_train_argv(zoo, run))
    assert result.code == 2 and "Traceback" not in result.err
    assert len(result.err_lines) == 1
    assert str(run / "checkpoints" / "step_000004") in result.err and cause in result.err
    monkeypatch.undo()
    _assert_loadable(run, 2)
    assert cli(_train_argv(zoo, run, "--resume")).code == 0
    _assert_same_weights(run, reference)


@pytest.fixture
def small_filesystem(tmp_path):
    """A real 1.5 MB filesystem (tmpfs, so root only): room for two of the tiny run's
    checkpoints (0.62 MB each) and not for the third. Yields ``(folder, grow)``; ``grow()`` makes
    it 16 MB, as an operator freeing space would."""
    import shutil
    import subprocess

    folder = tmp_path / "small-disk"
    folder.mkdir()
    mount = shutil.which("mount")
    if os.geteuid() != 0 or mount is None:
        pytest.skip("mounting a small tmpfs needs root; the injected-ENOSPC test above covers it")
    done = subprocess.run([mount, "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); the "
                    f"injected-ENOSPC test above covers it")

    def grow() -> None:
        subprocess.run([mount, "-o", "remount,size=16m", str(folder)], check=True)

    try:
        yield folder, grow
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_full_real_filesystem_names_file_and_cause_then_resume_is_exact(zoo, cli, reference,
                                                                        small_filesystem):
    """``steerflow train --out <a full disk>`` on a real small filesystem: the third checkpoint
    does not fit, the run ends with one line naming the file and "No space left on device"
    (exit 2) where torch's serialiser alone would say ``unexpected pos``; the two checkpoints
    before stay valid, and once there is space ``--resume`` finishes with the exact weights."""
    folder, grow = small_filesystem
    run = folder / "run"
    result = cli(_train_argv(zoo, run))
    assert result.code == 2 and "Traceback" not in result.err, result.err
    assert len(result.err_lines) == 1, result.err
    line = result.err_lines[0]
    assert "No space left on device" in line and str(run) in line and "unexpected pos" not in line
    assert re.search(r"(model\.safetensors|state\.pt|trainer\.json)", line), line  # the file
    _assert_loadable(run, 4)
    grow()
    assert cli(_train_argv(zoo, run, "--resume")).code == 0
    _assert_same_weights(run, reference)


def test_damaged_newest_checkpoint_is_skipped_on_resume(zoo, cli, reference, monkeypatch,
                                                        tmp_path):
    """The newest checkpoint damaged on disk (truncated weights) is never trusted: ``--resume``
    warns, falls back to the previous one and still ends bit-exact."""
    run = tmp_path / "run"
    _fail_commit_at(monkeypatch, 6, KeyboardInterrupt())
    assert cli(_train_argv(zoo, run)).code == 130
    monkeypatch.undo()
    assert [r.step for r in ckpt.list_checkpoints(run)] == [2, 4]
    weights = run / "checkpoints" / "step_000004" / ckpt.MODEL_FILE
    weights.write_bytes(weights.read_bytes()[:2000])
    result = cli([a for a in _train_argv(zoo, run, "--resume") if a != "--quiet"])
    assert result.code == 0, result.err
    assert "skipping damaged checkpoint" in result.err and "step_000004" in result.err
    _assert_same_weights(run, reference)


# ------------------------------------------------------------------ save_pretrained (model folders)
@pytest.fixture
def saved(zoo, tmp_path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A copy of the zoo's hybrid checkpoint and its weights."""
    folder = tmp_path / "model"
    model = SteerFlowGPT.from_pretrained(zoo.hybrid)
    model.save_pretrained(folder, tokenizer=model.tokenizer)
    return folder, {k: v.clone() for k, v in model.state_dict().items()}


def _changed(folder: Path) -> SteerFlowGPT:
    model = SteerFlowGPT.from_pretrained(folder)
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    return model


def _assert_holds(folder: Path, weights: dict[str, torch.Tensor]) -> None:
    loaded = SteerFlowGPT.from_pretrained(folder).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in weights.items())
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]  # no temporaries


def test_save_pretrained_interrupted_before_rename_keeps_the_old_model(saved, monkeypatch):
    folder, weights = saved
    new = _changed(folder)
    real_replace = os.replace

    def crash(src, dst, *args, **kwargs):
        if Path(dst).name == "model.safetensors":
            assert Path(src).stat().st_size > 0  # the new weights were fully written
            raise KeyboardInterrupt
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        new.save_pretrained(folder)
    monkeypatch.undo()
    _assert_holds(folder, weights)


def _make_read_only(folder: Path, monkeypatch) -> None:
    """Remove write permission from ``folder``. Root ignores permission bits, so when a probe
    write still succeeds, creating files there is made to fail with the same OS error instead."""
    folder.chmod(0o555)
    probe = folder / ".probe"
    try:
        probe.write_text("x")
    except PermissionError:
        return  # the OS enforces it
    probe.unlink()

    def refuse(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == folder:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder))
        return real_mkstemp(*args, dir=dir, **kwargs)

    real_mkstemp = tempfile.mkstemp
    monkeypatch.setattr(tempfile, "mkstemp", refuse)


def test_save_pretrained_into_a_read_only_folder_names_path_and_cause(saved, monkeypatch):
    folder, weights = saved
    new = _changed(folder)
    _make_read_only(folder, monkeypatch)
    try:
        with pytest.raises(CheckpointError) as info:
            new.save_pretrained(folder)
    finally:
        folder.chmod(0o755)
    message = str(info.value)
    assert str(folder / "model.safetensors") in message and "Permission denied" in message
    assert "\n" not in message
    monkeypatch.undo()
    _assert_holds(folder, weights)


# ------------------------------------------------------------------ stiff and diverging ODEs
def _solve(model: SteerFlowGPT, spec: SolverSpec) -> None:
    idx = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        model(idx, u=0.0, solver=spec)


def _tau_reached(message: str) -> float:
    match = re.search(r"τ reached ([0-9.e+-]+)", message)
    assert match, message
    return float(match.group(1))


def test_stiff_field_stops_at_max_nfe_naming_solver_tolerance_tau_and_nfe(zoo):
    """α·F(H) = -λH with λ = 1e5: dopri5 is stable only for steps ≲ 3.3/λ, so 200 evaluations
    cannot reach τ = 1. The error names the solver, its tolerances, τ reached and the NFE limit;
    τ reached is real: positive and within what 200 evaluations of stable steps can cover."""
    model = SteerFlowGPT.from_pretrained(zoo.stiff)
    spec = model.config.eval_solver
    assert (spec.method, spec.max_nfe) == ("dopri5", 200)
    with pytest.raises(SolverError) as info:
        _solve(model, spec)
    message = str(info.value)
    for needle in ("dopri5", "rtol=0.001", "atol=0.0001", "max_nfe=200", "τ reached"):
        assert needle in message, (needle, message)
    lam = 1e5
    # dopri5 spends 6 evaluations per step (FSAL); its real stability boundary is ≈ 3.3/λ, so 200
    # evaluations advance τ by at most 200/6 · 3.3/λ ≈ 1.1e-3 (bound 1.5e-3 leaves room for the
    # controller overshooting the boundary now and then)
    assert 0 < _tau_reached(message) < 200 / 6 * 4.5 / lam


def test_diverging_field_stops_with_step_size_underflow(zoo):
    """H grows like exp(α‖W‖τ) with α = 1e5: dopri5's step shrinks to nothing (torchdiffeq's
    "underflow in dt"); steerflow turns its assert into a SolverError naming solver, tolerance,
    τ reached and the evaluations spent."""
    model = SteerFlowGPT.from_pretrained(zoo.diverging)
    with pytest.raises(SolverError) as info:
        _solve(model, SolverSpec.parse("dopri5:1e-3"))
    message = str(info.value)
    for needle in ("dopri5", "rtol=0.001", "underflow in dt", "τ reached", "evaluations"):
        assert needle in message, (needle, message)
    assert 0 <= _tau_reached(message) < 1
    n = int(re.search(r"after (\d+) evaluations", message).group(1))
    assert 0 < n < SolverSpec().max_nfe  # it stopped on underflow, long before the NFE limit


def test_generation_with_a_failing_solve_exits_1_with_one_line(zoo, cli, one_line_error):
    """Solver failures are not usage errors: exit code 1, one line, nothing half-printed."""
    stiff = cli(["generate", zoo.stiff, "--prompt", "the film was", "--json"])
    one_line_error(stiff, 1, "max_nfe=200")
    assert "dopri5" in stiff.err and "τ reached" in stiff.err
    diverging = cli(["generate", zoo.diverging, "--prompt", "the film was", "--solver",
                     "dopri5:1e-3", "--max-new-tokens", "3"])
    one_line_error(diverging, 1, "underflow in dt")
    # the same checkpoint with a fixed-step solver (what the message advises) generates
    fixed = cli(["generate", zoo.stiff, "--prompt", "the film was", "--solver", "euler:4",
                 "--max-new-tokens", "3", "--json"])
    assert fixed.code == 0, fixed.err
