"""Checkpoints: atomic writes that survive crashes, pruning, and refusal of unsafe or bad files."""

from __future__ import annotations

import errno
import os
import pickle

import pytest
import torch

from steerflow.config import ModelConfig
from steerflow.errors import CheckpointError
from steerflow.model.gpt import SteerFlowGPT
from steerflow.train import checkpoint as ckpt
from steerflow.train.optim import WarmupCosine, param_groups


def make_state(seed: int = 0):
    torch.manual_seed(seed)
    model = SteerFlowGPT(ModelConfig.from_name("tiny", vocab_size=64))
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(2, 10, 0.1))
    x = torch.randint(0, 64, (2, 8))
    _, loss = model(x, targets=x)
    loss.backward()
    opt.step()
    sched.step()
    return model, opt, sched


def save(run, step, model, opt, sched, keep=3):
    return ckpt.save_checkpoint(run, step, model, opt, sched, {"note": step}, keep=keep)


def test_roundtrip_restores_weights_optimizer_schedule_and_rng(tmp_path):
    model, opt, sched = make_state(0)
    torch.manual_seed(123)
    path = save(tmp_path, 7, model, opt, sched)
    expected_draw = torch.rand(3)
    other, other_opt, other_sched = make_state(1)
    trainer = ckpt.load_checkpoint(path, other, other_opt, other_sched)
    assert trainer["step"] == 7 and trainer["note"] == 7
    for (n, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), n
    assert other_sched.state_dict()["last_epoch"] == sched.state_dict()["last_epoch"]
    assert other_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    state_a, state_b = opt.state_dict()["state"], other_opt.state_dict()["state"]
    assert all(torch.equal(state_a[k]["exp_avg_sq"], state_b[k]["exp_avg_sq"]) for k in state_a)
    assert torch.equal(torch.rand(3), expected_draw)  # RNG restored to the moment of saving


def test_keeps_only_the_last_k(tmp_path):
    model, opt, sched = make_state()
    for step in (2, 4, 6, 8, 10):
        save(tmp_path, step, model, opt, sched, keep=3)
    assert [r.step for r in ckpt.list_checkpoints(tmp_path)] == [6, 8, 10]


def test_disk_full_during_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched = make_state()
    save(tmp_path, 2, model, opt, sched)

    def disk_full(path, model):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt, "_write_model", disk_full)
    with pytest.raises(CheckpointError) as info:
        save(tmp_path, 4, model, opt, sched)
    message = str(info.value)
    assert "step_000004" in message and "No space left on device" in message
    assert [r.step for r in ckpt.list_checkpoints(tmp_path)] == [2]
    assert not list(ckpt.checkpoint_root(tmp_path).glob(".tmp-*"))  # nothing half-written left
    ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path)[0].path, make_state(5)[0])


def test_crash_between_write_and_rename_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched = make_state()
    save(tmp_path, 2, model, opt, sched)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)

    def crash(tmp, final):
        raise KeyboardInterrupt  # e.g. Ctrl-C after every file is written, before the rename

    monkeypatch.setattr(ckpt, "_commit", crash)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 4, model, opt, sched)
    # a save killed outright (kill -9) leaves its temporary folder: it is ignored, then cleaned
    stale = ckpt.checkpoint_root(tmp_path) / ".tmp-step_000006-999"
    stale.mkdir()
    (stale / ckpt.TRAINER_FILE).write_text("{}")
    refs = ckpt.list_checkpoints(tmp_path)
    assert [r.step for r in refs] == [2]
    fresh = make_state(9)[0]
    ckpt.load_checkpoint(refs[0].path, fresh, restore_rng=False)
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())
    assert ckpt.remove_stale_temporaries(tmp_path) == [stale]


def test_nonfinite_weights_are_never_written(tmp_path):
    model, opt, sched = make_state()
    with torch.no_grad():
        model.wte.weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite weights .*wte.weight"):
        save(tmp_path, 2, model, opt, sched)
    assert ckpt.list_checkpoints(tmp_path) == []


class _Exploit:
    """Unpickling this runs a shell command: what a malicious checkpoint would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_state_is_refused_without_running(tmp_path):
    model, opt, sched = make_state()
    path = save(tmp_path, 2, model, opt, sched)
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"optimizer": _Exploit(str(marker)), "scheduler": None, "rng": None},
                           protocol=2)
    pickle.loads(payload)  # plain unpickling does run it: the test below can fail
    assert marker.exists()
    marker.unlink()
    (path / ckpt.STATE_FILE).write_bytes(payload)
    with pytest.raises(CheckpointError, match="refused or unreadable"):
        ckpt.load_checkpoint(path, make_state(3)[0], make_state(3)[1])
    assert not marker.exists()


def test_truncated_weights_are_a_clear_error(tmp_path):
    model, opt, sched = make_state()
    path = save(tmp_path, 2, model, opt, sched)
    weights = path / ckpt.MODEL_FILE
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        ckpt.load_checkpoint(path, make_state(3)[0], restore_rng=False)


def test_weights_of_another_config_are_refused(tmp_path):
    model, opt, sched = make_state()
    path = save(tmp_path, 2, model, opt, sched)
    other = SteerFlowGPT(ModelConfig.from_name("tiny", vocab_size=64, n_embd=64))
    with pytest.raises(CheckpointError, match="do not match"):
        ckpt.load_checkpoint(path, other, restore_rng=False)
