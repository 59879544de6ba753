"""Steering training on ``tiny`` moves the paper's probe the right way within seconds.

The pretrained tiny model (cloze sentences at u = 0) is steered through the training loop's
``train()`` with ``task="steer"`` — the path ``steerflow train --task steer`` takes — so this also
checks the contract between :func:`steerflow.steer.data.build_steer_source` and the loop.
"""

from __future__ import annotations

import pytest
import torch

from steerflow.model.gpt import SteerFlowGPT
from steerflow.steer.sentiment_probe import probe


@pytest.fixture(scope="module")
def steered(pretrained_dir, fake_data_dir, tmp_path_factory):
    from steerflow.train import TrainConfig, train

    out = tmp_path_factory.mktemp("steered") / "run"
    cfg = TrainConfig(out=str(out), config="tiny", task="steer", init_from=str(pretrained_dir),
                      data_dir=str(fake_data_dir), cache_dir=str(out.parent / "cache"),
                      steer_data="cloze", steps=100, batch_size=16, lr=3e-2, warmup_steps=5,
                      eval_interval=100, eval_batches=2, test_batches=2, save_every=100,
                      quiet=True, seed=0, threads=1)
    result = train(cfg)
    return out, result


def test_probe_moves_in_the_direction_of_u(pretrained_dir, steered):
    out, _ = steered
    before = SteerFlowGPT.from_pretrained(pretrained_dir)
    after = SteerFlowGPT.from_pretrained(out)
    tok = after.tokenizer
    base = {p.u: p.share for p in probe(before, tok)}
    share = {p.u: p.share for p in probe(after, tok)}
    # before steering u barely acts: the field's output layer starts at std 1e-3
    assert abs(base[1.0] - base[-1.0]) < 0.01
    # after 100 steps of the ODE block alone u orders the share (measured: 0.66 / 0.49 / 0.39)
    assert share[1.0] > share[0.0] > share[-1.0]
    assert share[1.0] - share[-1.0] > 0.15


def test_only_the_ode_block_was_trained(pretrained_dir, steered):
    out, _ = steered
    before = SteerFlowGPT.from_pretrained(pretrained_dir).state_dict()
    after = SteerFlowGPT.from_pretrained(out).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("ode.") for k in changed)


def test_alpha_stays_fixed_unless_asked_to_train(pretrained_dir, fake_data_dir, steered, tmp_path):
    from steerflow.train import TrainConfig, train

    out, result = steered
    # default: α is moved into the field (α = 1, steer_alpha_value="auto"), then frozen
    assert result.alpha_start == result.alpha_end == 1.0
    assert float(SteerFlowGPT.from_pretrained(out).ode.alpha.detach()) == 1.0
    before = SteerFlowGPT.from_pretrained(pretrained_dir).ode.alpha
    cfg = TrainConfig(out=str(tmp_path / "trained"), config="tiny", task="steer",
                      init_from=str(pretrained_dir), data_dir=str(fake_data_dir),
                      cache_dir=str(tmp_path / "cache"), steer_data="cloze", steps=5, batch_size=8,
                      lr=3e-2, warmup_steps=1, eval_batches=1, test_batches=1, quiet=True,
                      seed=0, threads=1, steer_alpha="trained")
    train(cfg)
    assert not torch.equal(SteerFlowGPT.from_pretrained(tmp_path / "trained").ode.alpha, before)
