"""``steerflow experiment scale`` (:mod:`steerflow.pipeline.scale`) on two tiny-sized presets with
generated data: every key and file, the token budget's arithmetic, resuming after an interruption
(the finished size and stages are reused, the numbers are the same), and bad input."""

from __future__ import annotations

import dataclasses
import json

import pytest

from steerflow.cli.main import main
from steerflow.config import PRESETS
from steerflow.errors import ConfigError
from steerflow.pipeline import scale
from steerflow.pipeline.demo import SCALES
from steerflow.pipeline.environment import Environment
from steerflow.pipeline.scale import ScaleSettings, lm_steps, run_scale, size_settings
from steerflow.pipeline.scale_report import FILES, METRICS, write_scale

#: the second tiny-sized preset of the study (added to PRESETS for these tests only)
WIDE = "tiny-wide"
CONFIGS = ("tiny", WIDE)
BATCH = 4
#: 6 steps of 4 × 32 tokens, plus a remainder that must be dropped
TOKENS = 6 * BATCH * 32 + 50
ROW_KEYS = ("config", "params", "params_hybrid", "tokens", "lm_steps", "gradient_events",
            "alpha_start", "alpha_end", "val_loss_baseline", "val_loss_hybrid", "val_loss_ratio",
            "own_effect", "own_effect_by_judge", "positive_rate", "displacement_divergence",
            "relative_divergence", "latency_ratio", "wall_s", "stage_s", "reused_stages")
STAGES = ["lm", "experts", "distill", "steering", "invariance", "latency"]



@pytest.fixture(scope="module")
def presets():
    """``tiny`` and a wider ``tiny-wide`` preset (more parameters, same shapes otherwise)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PRESETS, WIDE, dict(PRESETS["tiny"], n_embd=48, field_hidden=48))
        yield


@pytest.fixture(scope="module")
def settings(presets) -> ScaleSettings:
    recipe = dataclasses.replace(
        SCALES["tiny"], steer_steps=None, expert_steps=2, distill_steps=3, test_batches=2,
        eval_prompts=3, eval_samples=2, eval_new_tokens=6, sweep_points=3,
        guidance_gammas=(), dexperts_alphas=(1.0,), invariance_batches=1)
    return ScaleSettings(configs=CONFIGS, tokens=TOKENS, recipe=recipe, batch_size=BATCH)


@pytest.fixture(scope="module")
def env(tmp_path_factory, make_story_data) -> Environment:
    root = tmp_path_factory.mktemp("scale-data")
    data, _ = make_story_data(root / "data", gpt2_placeholder=True)
    return Environment(data_dir=str(data), cache_dir=str(root / "cache"), device="cpu",
                       threads=1, quiet=True)


@pytest.fixture(scope="module")
def study(settings, env, tmp_path_factory):
    """An interrupted study (the second size fails in its last stage), then the same call again:
    ``(out, records of the first size after the interruption, resumed result)``."""
    out = tmp_path_factory.mktemp("scale") / "study"
    real = scale.stage_latency

    def failing(s, env):
        run = real(s, env)

        def wrapped(ctx):
            if s.config == WIDE:
                raise KeyboardInterrupt  # as if the study had been stopped here
            return run(ctx)
        return wrapped

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scale, "stage_latency", failing)
        with pytest.raises(KeyboardInterrupt):
            run_scale(settings, out, env)
    first = {p.name: p.read_bytes() for p in (out / "tiny" / "stages").iterdir()}
    assert not (out / WIDE / "stages" / "latency.json").exists()
    return out, first, run_scale(settings, out, env, command="test")


def test_study_writes_every_key_and_file(study, settings):
    out, _, result = study
    assert [r["config"] for r in result["sizes"]] == list(CONFIGS)
    assert result["tokens"] == TOKENS and result["configs"] == list(CONFIGS)
    assert result["paper"]["params"] == 30_503_424 and "statement" in result["paper"]
    for row in result["sizes"]:
        for key in ROW_KEYS:
            assert key in row, key
        assert row["stage_s"].keys() == set(STAGES)
        assert row["own_effect"] is not None and -1 <= row["own_effect"] <= 1
        rates = row["positive_rate"]
        for judge, effect in row["own_effect_by_judge"].items():
            assert effect == pytest.approx(rates["+1"][judge] - rates["-1"][judge])
        assert row["val_loss_ratio"] == pytest.approx(row["val_loss_hybrid"]
                                                      / row["val_loss_baseline"])
        assert row["alpha_start"] != row["alpha_end"]  # α trained
        assert row["latency_ratio"] > 0 and row["displacement_divergence"] >= 0
    small, wide = result["sizes"]
    assert wide["params"] > small["params"]  # the wider preset is the larger size
    written = write_scale(result, out)
    assert written == list(FILES)
    saved = json.loads((out / "results.json").read_text())
    assert saved["sizes"][1]["config"] == WIDE
    table = (out / "results.md").read_text()
    assert "`tiny`" in table and f"`{WIDE}`" in table and "paper 1" in table
    assert (out / "scale.png").stat().st_size > 10_000
    assert len(METRICS) == 7  # one panel per metric the issue names (and wall time)


def test_token_budget_gives_exact_steps(study, settings):
    out, _, result = study
    per_step = BATCH * 32
    for row in result["sizes"]:
        assert row["lm_steps"] == 6 and row["tokens"] == 6 * per_step <= TOKENS
        for model in ("baseline", "hybrid"):
            summary = json.loads((out / row["config"] / "lm" / model / "summary.json").read_text())
            assert summary["step"] == 6
    # the presets' own shapes: small 32 × 64, mid 16 × 128, paper 8 × 128 per step
    for config, per in (("small", 2048), ("mid", 2048), ("paper", 1024)):
        assert lm_steps(per * 80, config) == 80
        assert lm_steps(per * 80 + per - 1, config) == 80  # a partial step is dropped
        s = size_settings(ScaleSettings(configs=(config,), tokens=per * 80 + 1), config)
        assert s.lm_steps * s.lm_batch_size * PRESETS[config]["block_size"] == per * 80
    assert lm_steps(1000, "paper", batch_size=1) == 1000 // 128


def test_resume_reuses_the_finished_size_and_gives_the_same_numbers(study, settings, env):
    out, first, result = study
    small, wide = result["sizes"]
    assert small["reused_stages"] == STAGES  # the whole finished size
    assert wide["reused_stages"] == STAGES[:-1]  # all but the interrupted stage
    after = {p.name: p.read_bytes() for p in (out / "tiny" / "stages").iterdir()}
    assert after == first  # nothing of the first size ran again
    record = json.loads(first["lm.json"])["result"]
    assert small["val_loss_ratio"] == (record["hybrid"]["val_loss"]
                                       / record["baseline"]["val_loss"])
    again = run_scale(settings, out, env, command="test")
    assert [r.pop("reused_stages") for r in again["sizes"]] == [STAGES, STAGES]
    assert again["sizes"] == [{k: v for k, v in r.items() if k != "reused_stages"}
                              for r in result["sizes"]]


@pytest.mark.parametrize("flags, message", [
    (["--configs", "small,huge"], "unknown config(s) huge"),
    (["--configs", "small,mid,small"], "names small more than once"),
    (["--tokens", "0"], "--tokens must be a positive"),
    (["--tokens", "1000"], "less than one training step"),
    (["--configs", ""], "--configs is empty"),
])
def test_bad_input_is_one_line_and_exit_code_2(flags, message, capsys, tmp_path):
    code = main(["experiment", "scale", "--out", str(tmp_path / "x"), *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()  # nothing ran


def test_settings_reject_bad_values_directly():
    with pytest.raises(ConfigError, match="positive"):
        ScaleSettings(tokens=-5)
    with pytest.raises(ConfigError, match="more than once"):
        ScaleSettings(configs=("paper", "paper"))
