"""Gradient events and non-finite steps: the counters fire on crafted cases, and only on them."""

from __future__ import annotations

import math

import pytest
import torch

from steerflow.model.gpt import SteerFlowGPT
from steerflow.train import NonFiniteError, train
from steerflow.train import checkpoint as ckpt
from steerflow.train.config import EXPLODE_MIN_HISTORY
from steerflow.train.metrics import GradientMonitor, read_metrics


def test_monitor_classifies_crafted_norms():
    mon = GradientMonitor(floor=1e-6, factor=10.0, window=50)
    # before EXPLODE_MIN_HISTORY norms are known there is no median to judge a spike against
    events = [mon.observe(100.0 if i == 3 else 1.0, 0.1) for i in range(EXPLODE_MIN_HISTORY)]
    assert not any(e.exploding or e.vanishing for e in events)
    assert not mon.observe(9.9, 0.1).exploding  # median 1.0: 9.9 < 10 × 1.0
    spike = mon.observe(10.5, 0.1)
    assert spike.exploding and "running median" in spike.reason
    assert mon.observe(math.inf, 0.1).exploding
    assert mon.observe(1.0, math.nan).exploding  # a NaN in the ODE norm is non-finite too
    assert mon.observe(5e-7, 0.1).vanishing
    ode_vanish = mon.observe(1.0, 1e-9)
    assert ode_vanish.vanishing and "ODE" in ode_vanish.reason
    assert not mon.observe(1.0, None).vanishing  # a baseline has no ODE norm
    assert (mon.vanishing_steps, mon.exploding_steps) == (2, 3)


def test_monitor_state_roundtrip_continues_identically():
    a = GradientMonitor(1e-6, 10.0, 5)
    for n in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0):
        a.observe(n)
    b = GradientMonitor(1e-6, 10.0, 5)
    b.load_state_dict(a.state_dict())
    for n in (7.0, 100.0, 1e-9):
        assert a.observe(n) == b.observe(n)
    assert a.state_dict() == b.state_dict()


class LogitHook:
    """Multiply the LM head's output by ``factor`` at chosen (1-based) training steps."""

    def __init__(self, model: SteerFlowGPT, factors: dict[int, float]) -> None:
        self.factors, self.step = factors, 0
        model.lm_head.register_forward_hook(self)

    def __call__(self, module, args, output):
        if not module.training:
            return output
        self.step += 1
        return output * self.factors.get(self.step, 1.0)


def tiny_model(cfg) -> SteerFlowGPT:
    from steerflow.data import resolve_data_source
    from steerflow.train.tasks import load_tokenizer

    tokenizer = load_tokenizer(cfg.tokenizer, resolve_data_source(cfg.data_dir, require=("wikitext-2",)),
                               cfg.cache_path())
    torch.manual_seed(cfg.seed)
    model = SteerFlowGPT(cfg.model_config(tokenizer.vocab_size))
    model.tokenizer = tokenizer
    return model


def test_crafted_exploding_vanishing_and_nan_steps_are_counted(make_cfg):
    cfg = make_cfg("events", steps=16, save_every=4, on_nonfinite="skip")
    model = tiny_model(cfg)
    # step 12: logits × 1000 → grads × ~1000 (exploding); 14: logits × 0 → all grads 0
    # (vanishing); 15: NaN logits → NaN loss (exploding, and the update is skipped)
    LogitHook(model, {12: 1e3, 14: 0.0, 15: math.nan})
    result = train(cfg, model=model)
    records = read_metrics(cfg.out_dir / "metrics.jsonl", "train")
    flagged = {r["step"]: (r["vanishing"], r["exploding"], r["skipped"]) for r in records
               if r["vanishing"] or r["exploding"] or r["skipped"]}
    assert flagged == {12: (False, True, False), 14: (True, False, False),
                       15: (False, True, True)}
    assert (result.vanishing_steps, result.exploding_steps, result.nonfinite_steps) == (1, 2, 1)
    assert result.step == 16 and all(torch.isfinite(p).all() for p in model.parameters())
    for ref in ckpt.list_checkpoints(cfg.out_dir):  # every checkpoint written holds finite weights
        ckpt.load_checkpoint(ref.path, tiny_model(cfg), restore_rng=False)


def test_stop_on_nonfinite_names_the_step_and_writes_no_bad_checkpoint(make_cfg):
    cfg = make_cfg("stop", steps=10, save_every=2, on_nonfinite="stop")
    model = tiny_model(cfg)
    LogitHook(model, {5: math.nan})
    with pytest.raises(NonFiniteError, match=r"step 5: non-finite loss .*step_000004"):
        train(cfg, model=model)
    assert [r.step for r in ckpt.list_checkpoints(cfg.out_dir)] == [2, 4]
    assert [r["step"] for r in read_metrics(cfg.out_dir / "metrics.jsonl", "train")] == [1, 2, 3, 4]
