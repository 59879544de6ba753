"""``steerflow experiment fluency`` (:mod:`steerflow.pipeline.fluency`) on ``tiny`` with generated
data: each candidate's change reaches its run, the step count is the budget over the calibrated
CPU seconds per step, the CPU-minutes are the runs' own, the best is the lowest word perplexity,
a second run reuses everything, and bad settings are refused."""

from __future__ import annotations

import json
import math

import pytest

from steerflow.errors import ConfigError
from steerflow.pipeline.environment import Environment
from steerflow.pipeline.fluency import (CANDIDATE_NAMES, COMBINED, FluencySettings,
                                        best_by_budget, budget_folder, combined_candidate,
                                        cpu_seconds, run_fluency, steps_for)
from steerflow.pipeline.fluency_report import FILES, write_fluency

CANDIDATES = ("small", "deep", "batch16", "sst2-text")
MINUTES = (0.004, 0.008)
SST2 = [("a wonderful , moving film", 1), ("great fun and beautifully acted", 1),
        ("a dull , tedious mess", 0), ("boring and badly acted", 0)] * 10


@pytest.fixture(scope="module")
def study(tmp_path_factory, make_fake_data):
    root = tmp_path_factory.mktemp("fluency")
    data = make_fake_data(root / "data", sst2=SST2)
    env = Environment(data_dir=str(data), cache_dir=str(root / "cache"), device="cpu", threads=1,
                      quiet=True)
    settings = FluencySettings(candidates=CANDIDATES, minutes=MINUTES, calibration_steps=4,
                               config="tiny")
    out = root / "study"
    first = run_fluency(settings, out, env, combine=False)
    second = run_fluency(settings, out, env, combine=False)
    return settings, env, out, first, second


def _train_config(out, name, minutes) -> dict:
    return json.loads((out / name / budget_folder(minutes) / "train_config.json").read_text())


def test_every_candidate_has_a_point_per_budget_with_the_calibrated_step_count(study):
    _, _, out, result, _ = study
    assert [r["name"] for r in result["candidates"]] == list(CANDIDATES)
    for row in result["candidates"]:
        assert [p["budget_minutes"] for p in row["points"]] == list(MINUTES)
        for point in row["points"]:
            run_dir = out / row["name"] / budget_folder(point["budget_minutes"])
            assert point["steps"] == steps_for(point["budget_minutes"], row["cpu_s_per_step"])
            assert _train_config(out, row["name"], point["budget_minutes"])["steps"] == point["steps"]
            # the CPU-minutes reported are the run's own steps' CPU seconds
            spent = cpu_seconds(run_dir)
            assert len(spent) == point["steps"]
            assert point["cpu_minutes"] == pytest.approx(sum(spent) / 60)
            assert math.isfinite(point["val_word_ppl"]) and point["val_word_ppl"] > point["val_ppl"]


def test_each_candidate_changes_what_it_says(study):
    _, _, out, _, _ = study
    small, deep = (_train_config(out, n, MINUTES[0]) for n in ("small", "deep"))
    assert deep["model_overrides"] == {"n_layer": 8} and small["model_overrides"] == {}
    saved = json.loads((out / "deep" / budget_folder(MINUTES[0]) / "config.json").read_text())
    assert saved["n_layer"] == 8
    assert _train_config(out, "batch16", MINUTES[0])["batch_size"] == 16
    assert small["batch_size"] != 16
    text = _train_config(out, "sst2-text", MINUTES[0])
    assert (text["lm_u"], text["lm_u_share"], text["lm_u_dropout"]) == ("conditional", 0.25, 1.0)
    assert small["lm_u"] == "zero"


def test_word_perplexity_is_the_loss_over_the_splits_words(study):
    _, _, out, result, _ = study
    for row in result["candidates"]:
        for point in row["points"]:
            summary = json.loads((out / row["name"] / budget_folder(point["budget_minutes"])
                                  / "summary.json").read_text())
            valid = summary["evals"]["valid"]
            assert point["val_loss"] == valid["loss"]
            # word ppl = exp(loss · tokens / words) > token ppl: a word is >= 1 token here
            assert math.log(point["val_word_ppl"]) / point["val_loss"] >= 1.0


def test_the_best_is_the_lowest_word_perplexity_per_budget(study):
    _, _, _, result, _ = study
    for i, minutes in enumerate(MINUTES):
        best = result["best"][f"{minutes:g}"]
        values = {r["name"]: r["points"][i]["val_word_ppl"] for r in result["candidates"]}
        assert best["candidate"] == min(values, key=values.get)
        assert best["ranking"] == sorted(values, key=values.get)
        assert best["ratio_to_reference"] == pytest.approx(values[best["candidate"]]
                                                           / values["small"])


def test_best_by_budget_on_made_up_rows():
    rows = [{"name": "ref", "points": [{"val_word_ppl": 100.0}, {"val_word_ppl": 50.0}]},
            {"name": "a", "points": [{"val_word_ppl": 80.0}, {"val_word_ppl": 60.0}]},
            {"name": "b", "points": [{"val_word_ppl": None}, {"val_word_ppl": 40.0}]}]
    best = best_by_budget(rows, (1.0, 2.0))
    assert best["1"]["candidate"] == "a" and best["1"]["ratio_to_reference"] == pytest.approx(0.8)
    assert best["1"]["ranking"] == ["a", "ref", "b"]  # a missing perplexity ranks last
    assert best["2"]["candidate"] == "b" and best["2"]["ratio_to_reference"] == pytest.approx(0.8)


def _row(name, ppl, model=None, train=None):
    return {"name": name, "model": model or {}, "train": train or {},
            "points": [{"val_word_ppl": 1e9}, {"val_word_ppl": ppl}]}


def test_the_combined_candidate_takes_the_helpful_changes_whole_and_without_clashes():
    rows = [_row("small", 100.0),
            _row("wide", 90.0, model={"n_embd": 192, "n_head": 6}),
            _row("narrow", 95.0, model={"n_embd": 96, "n_head": 3}),  # clashes with wide
            _row("batch16", 80.0, train={"batch_size": 16}),
            _row("context128", 85.0, train={"block_size": 128, "batch_size": 16}),  # clash
            _row("deep", 120.0, model={"n_layer": 8}),  # worse than the preset
            _row("lr", 99.0, train={"lr": 6e-3})]
    combo = combined_candidate(rows)  # ranked by the last budget's perplexity only
    assert combo.name == COMBINED and combo.what == "batch16 + wide + lr"
    assert combo.model == {"n_embd": 192, "n_head": 6}
    assert combo.train == {"batch_size": 16, "lr": 6e-3}
    assert combined_candidate(rows[:3]) is None  # one helpful change: nothing to combine
    assert combined_candidate([_row("small", 100.0), _row("deep", 120.0)]) is None


def test_the_combined_candidate_runs_after_the_others(study, monkeypatch):
    from steerflow.pipeline import fluency

    settings, env, out, _, _ = study
    combo = fluency.Candidate(COMBINED, "deep + batch16", model={"n_layer": 8},
                              train={"batch_size": 16})
    seen = []
    monkeypatch.setattr(fluency, "combined_candidate", lambda rows: seen.append(rows) or combo)
    result = run_fluency(settings, out, env)
    assert [r["name"] for r in seen[0]] == list(CANDIDATES)  # chosen from the single changes
    assert [r["name"] for r in result["candidates"]] == [*CANDIDATES, COMBINED]
    assert result["reused"] == list(CANDIDATES)
    saved = _train_config(out, COMBINED, MINUTES[-1])
    assert saved["model_overrides"] == {"n_layer": 8} and saved["batch_size"] == 16
    assert run_fluency(settings, out, env)["reused"] == [*CANDIDATES, COMBINED]


def test_a_second_run_reuses_every_candidate_and_gives_the_same_numbers(study):
    _, _, _, first, second = study
    assert first["reused"] == [] and second["reused"] == list(CANDIDATES)
    assert second["candidates"] == first["candidates"]


def test_files_are_written(study, tmp_path):
    _, _, _, result, _ = study
    assert write_fluency(result, tmp_path) == list(FILES)
    assert json.loads((tmp_path / "results.json").read_text())["best"] == result["best"]
    table = (tmp_path / "results.md").read_text()
    assert all(f"`{name}`" in table for name in CANDIDATES)
    assert (tmp_path / "fluency.png").stat().st_size > 1000


@pytest.mark.parametrize("kwargs, message", [
    (dict(candidates=()), "is empty"),
    (dict(candidates=("small", "huge")), "unknown candidate(s) huge"),
    (dict(candidates=("small", "small")), "more than once"),
    (dict(minutes=()), "positive numbers"),
    (dict(minutes=(1.0, -1.0)), "positive numbers"),
    (dict(minutes=(1.0, math.nan)), "positive numbers"),
    (dict(minutes=(1.0, 1.0)), "repeats a budget"),
    (dict(calibration_steps=2), "calibration_steps"),
    (dict(warmup_fraction=1.0), "warmup_fraction"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FluencySettings(**kwargs)


def test_steps_for_spends_the_budget():
    assert steps_for(2.0, 0.5) == 240
    assert steps_for(2.0, 0.7) == 171  # the last partial step is not taken
    assert steps_for(0.001, 10.0) == 1  # at least one step
    assert "small" in CANDIDATE_NAMES and CANDIDATE_NAMES[0] == "small"
