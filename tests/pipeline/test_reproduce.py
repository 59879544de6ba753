"""``steerflow reproduce --scale paper`` runs paper 1 at its configuration and estimates its duration."""

from __future__ import annotations

import math

import pytest

from steerflow.config import ModelConfig
from steerflow.pipeline.demo import REPRODUCE_SCALES, SCALES, Environment
from steerflow.pipeline.estimate import estimate_seconds, eval_fraction
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


def test_paper_scale_stage_estimates_weigh_the_evaluations_as_measured():
    from steerflow.pipeline.demo import STAGE_SECONDS, build_stages

    stages = {stage.name: stage.estimate_s for stage in build_stages(SCALES["paper"], Environment())}
    assert stages == STAGE_SECONDS["paper"]
    # at paper scale the flow analysis outweighs LM training; on the small demo it is a fifth of it
    assert stages["flow"] > stages["lm"]
    assert eval_fraction("paper") > 3 * eval_fraction("small") > 0
    tiny = {stage.name: stage.estimate_s for stage in build_stages(SCALES["tiny"], Environment())}
    assert tiny["lm"] == pytest.approx(0.1 * STAGE_SECONDS["small"]["lm"])


def test_expected_duration_rescales_the_stage_etas(tmp_path, monkeypatch):
    from steerflow.pipeline import demo

    seen = {}

    class Runner:  # records the stage estimates run_pipeline hands to the runner, runs nothing
        def __init__(self, out, stages, settings, log):
            seen["total"] = sum(stage.estimate_s for stage in stages)
            raise KeyboardInterrupt

    monkeypatch.setattr(demo, "StageRunner", Runner)
    monkeypatch.setattr(demo, "data_source", lambda env: None)
    for expected in (None, 1234.0):
        try:
            demo.run_pipeline(tmp_path, SCALES["paper"], Environment(), expected_s=expected)
        except KeyboardInterrupt:
            pass
        if expected is None:
            built_in = seen["total"]
    assert built_in > 0 and seen["total"] == pytest.approx(1234.0)


def test_recipe_stages_follow_the_settings():
    import dataclasses

    from steerflow.errors import ConfigError
    from steerflow.pipeline.demo import RunSettings, build_stages

    def names(**kw):
        return [st.name for st in build_stages(dataclasses.replace(SCALES["tiny"], **kw),
                                               Environment())]

    assert names()[:5] == ["lm", "contractive", "steer", "experts", "distill"]
    assert "steer" not in names(steer_steps=None)  # distillation straight from the hybrid
    assert "experts" not in names(expert_steps=None)  # the guidance teacher then
    assert {"experts", "distill"}.isdisjoint(names(expert_steps=None, distill_steps=None))
    assert "contractive" not in names(contractive=False)  # and the flow stage compares none
    flow = [st for st in build_stages(dataclasses.replace(SCALES["tiny"], contractive=False),
                                      Environment()) if st.name == "flow"][0]
    assert "contractive" in flow.settings
    assert not SCALES["small"].contractive and REPRODUCE_SCALES["small"].contractive
    RunSettings(control_adapter=0)  # a rank of 0 is "no adapter", not an error
    with pytest.raises(ConfigError, match="control_adapter must be >= 0"):
        RunSettings(control_adapter=-1)
    with pytest.raises(ConfigError, match="steering stage"):
        RunSettings(steer_steps=None, distill_steps=None)
