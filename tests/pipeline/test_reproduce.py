"""``steerflow reproduce --scale paper`` runs paper 1 at its configuration and estimates its duration."""

from __future__ import annotations

import math

from steerflow.config import ModelConfig
from steerflow.pipeline.demo import SCALES, Environment
from steerflow.pipeline.estimate import estimate_seconds
from steerflow.train.config import TrainConfig


def test_paper_scale_is_the_paper_configuration():
    s = SCALES["paper"]
    train_cfg = TrainConfig(out="x", config=s.config, steps=s.lm_steps)
    assert (s.lm_steps, train_cfg.tokenizer) == (500, "gpt2")  # Exp. 1: 500 steps, GPT-2 BPE
    config = ModelConfig.from_name(s.config)  # its parameter count: tests/model/test_config.py
    assert config.vocab_size == 50257 and config.block_size == 128
    assert not s.bench_quick  # the benchmark at the paper shapes


def test_estimate_is_a_positive_duration_that_covers_the_training_steps():
    settings = SCALES["tiny"]
    est = estimate_seconds(settings, Environment(device="cpu"))
    assert est["device"] == "cpu" and est["step_s"] > 0
    assert math.isfinite(est["total_s"]) and est["total_s"] > est["train_s"] > 0
    # two LM trainings of lm_steps steps each, at the least
    assert est["train_s"] >= 2 * settings.lm_steps * est["step_s"]
