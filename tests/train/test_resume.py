"""Exact resume: an interrupted-and-resumed run equals an uninterrupted one, bit for bit on CPU."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from steerflow.data import prepare_lm_data, resolve_data_source
from steerflow.train import LMBatchSource, TrainConfig, train
from steerflow.train import checkpoint as ckpt
from steerflow.train.metrics import read_metrics
from steerflow.train.tasks import load_tokenizer


def final_weights(run: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(run) / "model.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"  # bit-exact: same ops, same order


def curve(run: str | Path, key: str = "loss") -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in read_metrics(Path(run) / "metrics.jsonl", "train")]


class SignalAt:
    """A batch source that sends this process ``signum`` while fetching the batch of ``step``."""

    def __init__(self, inner, step: int, signum: int) -> None:
        self.inner, self.step, self.signum = inner, step, signum
        self.eval_splits = inner.eval_splits
        self.tokens_per_word = inner.tokens_per_word

    def train_batch(self, step, batch_size, rank=0, world_size=1):
        if step == self.step:
            signal.raise_signal(self.signum)
        return self.inner.train_batch(step, batch_size, rank, world_size)

    def eval_batches(self, split, batch_size):
        return self.inner.eval_batches(split, batch_size)


def lm_source(cfg: TrainConfig) -> LMBatchSource:
    source = resolve_data_source(cfg.data_dir, require=("wikitext-2",))
    tokenizer = load_tokenizer(cfg.tokenizer, source, cfg.cache_path())
    prepared = prepare_lm_data(source, tokenizer, cfg.cache_path(), progress=False)
    return LMBatchSource(prepared, cfg.model_config().block_size, cfg.seed)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_and_resume_is_bit_exact(make_cfg, signum):
    full = make_cfg("full", steps=10, save_every=3)
    train(full)
    cut = make_cfg("cut", steps=10, save_every=3)
    first = train(cut, batch_source=SignalAt(lm_source(cut), step=4, signum=signum))
    # the signal arrives during step 5 (0-based 4): the step finishes, is saved, and the run stops
    assert first.interrupted and first.step == 5
    assert [r.step for r in ckpt.list_checkpoints(cut.out_dir)] == [3, 5]
    assert not (cut.out_dir / "model.safetensors").exists()  # final model only when complete

    second = train(cut.replace(resume=True))
    assert second.resumed_from == 5 and second.step == 10 and not second.interrupted
    assert curve(cut.out) == curve(full.out)  # every step logged once, identical losses
    assert curve(cut.out, "grad_norm") == curve(full.out, "grad_norm")
    assert_same_weights(final_weights(cut.out), final_weights(full.out))
    assert second.final_loss == train_result_loss(full)


def train_result_loss(cfg: TrainConfig) -> float:
    import json

    return json.loads((cfg.out_dir / "summary.json").read_text())["final_loss"]


def test_kill9_mid_run_then_resume_matches_uninterrupted(make_cfg, cli_args, steerflow_cmd):
    steps = 40
    ref = make_cfg("ref", steps=steps, save_every=2, eval_interval=steps)
    train(ref)
    victim = make_cfg("victim", steps=steps, save_every=2, eval_interval=steps)
    cmd, env = steerflow_cmd(*cli_args(victim))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        refs = ckpt.list_checkpoints(victim.out_dir)
        if refs and refs[-1].step >= 4:
            break
        time.sleep(0.005)
    proc.kill()
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert not (victim.out_dir / "summary.json").exists()  # it really died mid-run

    last = ckpt.list_checkpoints(victim.out_dir)[-1]
    assert 4 <= last.step < steps
    from steerflow.model.gpt import SteerFlowGPT

    probe = SteerFlowGPT(TrainConfig.from_json(victim.out_dir / "train_config.json")
                         .model_config(vocab_size=final_weights(ref.out)["wte.weight"].shape[0]))
    trainer = ckpt.load_checkpoint(last.path, probe, restore_rng=False)  # the last one is intact
    assert trainer["step"] == last.step

    # the same command line plus --resume (in this process: one torch import less)
    from steerflow.cli.main import main

    assert main(cli_args(victim)[:] + ["--resume"]) == 0
    assert_same_weights(final_weights(victim.out), final_weights(ref.out))
    assert curve(victim.out) == curve(ref.out)
    assert not list(ckpt.checkpoint_root(victim.out_dir).glob(".tmp-*"))
