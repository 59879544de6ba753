"""bfloat16 autocast and ``torch.compile`` train the same model as float32 eager, to their precision."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from steerflow.train import train
from steerflow.train.metrics import read_metrics


def _losses(cfg) -> list[float]:
    train(cfg)
    return [r["loss"] for r in read_metrics(Path(cfg.out) / "metrics.jsonl", "train")]


@pytest.mark.parametrize("model", ["baseline", "hybrid"])
def test_bfloat16_autocast_follows_the_float32_run(make_cfg, model):
    reference = _losses(make_cfg(f"fp32-{model}", model=model, steps=4))
    bf16 = _losses(make_cfg(f"bf16-{model}", model=model, steps=4, dtype="bfloat16"))
    assert all(math.isfinite(v) for v in bf16)
    # bf16 keeps 8 mantissa bits: the losses agree to about 1 % and are not bit-identical
    assert bf16 != reference
    for a, b in zip(bf16, reference):
        assert a == pytest.approx(b, rel=2e-2)


def test_compiled_training_matches_eager(make_cfg):
    eager = _losses(make_cfg("eager", steps=3))
    compiled = _losses(make_cfg("compiled", steps=3, compile=True))
    # the same arithmetic up to kernel fusion's reordering of float32 sums
    for a, b in zip(compiled, eager):
        assert a == pytest.approx(b, rel=1e-4)
