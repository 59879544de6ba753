"""``steerflow demo --config tiny`` end to end on the real data: every file, every report key,
and a second run that reuses the finished stages."""

import json
import os
from pathlib import Path

import pytest

from steerflow.cli.main import main

REQUIRED_KEYS = [
    ("lm", "baseline", "val_loss"), ("lm", "hybrid", "val_loss"), ("lm", "hybrid", "alpha_end"),
    ("lm", "hybrid", "vanishing_steps"), ("lm", "hybrid", "exploding_steps"),
    ("steering", "probe"), ("steering", "open_ended"),
    ("invariance", "relative_divergence"), ("invariance", "displacement_divergence"),
    ("flow", "order"), ("bench", "latency_ratio"), ("elapsed_s",),
    ("checkpoints", "baseline"), ("checkpoints", "hybrid"), ("checkpoints", "steered"),
    ("steer_training", "steps"), ("distill", "steps"), ("distill", "gamma"),
    ("steering", "baselines", "dexperts"), ("steering", "baselines", "guidance"),
]


def _get(d, keys):
    for k in keys:
        assert k in d, f"report.json lacks {'.'.join(keys)}"
        d = d[k]
    return d


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    if not os.environ.get("STEERFLOW_DATA"):
        pytest.skip("STEERFLOW_DATA is not set")
    out = tmp_path_factory.mktemp("demo") / "run"
    cache = tmp_path_factory.mktemp("cache")
    code = main(["demo", "--config", "tiny", "--out", str(out), "--cache-dir", str(cache),
                 "--quiet", "--threads", "2"])
    assert code == 0
    return out, cache


def test_demo_writes_every_file_and_key(demo_run):
    out, _ = demo_run
    report = json.loads((out / "report.json").read_text())
    for keys in REQUIRED_KEYS:
        _get(report, keys)
    for u in ("+1", "0", "-1"):
        probe = report["steering"]["probe"][u]
        assert 0 <= probe["p_good"] <= 1 and 0 <= probe["p_bad"] <= 1
        rates = report["steering"]["open_ended"][u]["positive_rate"]
        assert set(rates) >= {"vader", "sst2-tfidf"}
    assert report["lm"]["hybrid"]["alpha_end"] != report["lm"]["hybrid"]["alpha_start"]
    text = (out / "report.md").read_text()
    assert "paper 1" in text and "The movie was" in text
    for rel in ("lm/fig1.png", "steering/fig2.png", "probe/fig3.png", "probe/fig4.png"):
        assert (out / rel).stat().st_size > 1000, rel
    # the distillation stage started from the steering stage's model, learned DExperts over the
    # two experts of the experts stage, and wrote the steered one
    distill = json.loads((out / "steered" / "train_config.json").read_text())
    assert distill["init_from"] == str(out / "steer" / "conditional")
    assert distill["distill_teacher"] == (f"dexperts:{out / 'experts' / 'positive'},"
                                          f"{out / 'experts' / 'negative'}")
    assert report["distill"]["teacher"] == distill["distill_teacher"]
    for rel in ("baseline", "hybrid", "steered"):
        ckpt = Path(report["checkpoints"][rel])
        assert (ckpt / "model.safetensors").is_file() and (ckpt / "tokenizer.json").is_file()


def test_rerun_reuses_finished_stages_and_redoes_a_removed_one(demo_run, capsys):
    out, cache = demo_run
    (out / "stages" / "samples.json").unlink()  # as if the run had stopped during this stage
    code = main(["demo", "--config", "tiny", "--out", str(out), "--cache-dir", str(cache),
                 "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert "samples" not in report["reused_stages"]
    assert {"lm", "steer", "steering", "invariance", "bench"} <= set(report["reused_stages"])
    assert len(report["samples"]) > 0


def test_lm_model_changes_both_lms_and_is_part_of_the_lm_stage_fingerprint(tmp_path,
                                                                           make_story_data):
    """``RunSettings.lm_model`` (the fluency study's winner) reaches the baseline's and the
    hybrid's config, and changing it re-runs the LM stage."""
    import dataclasses

    from steerflow.pipeline.demo import SCALES, build_stages
    from steerflow.pipeline.environment import Environment
    from steerflow.pipeline.stages import StageRunner

    data, _ = make_story_data(tmp_path / "data", gpt2_placeholder=True)
    env = Environment(data_dir=str(data), cache_dir=str(tmp_path / "cache"), device="cpu",
                      threads=1, quiet=True)
    settings = dataclasses.replace(SCALES["tiny"], lm_steps=3, test_batches=1,
                                   lm_model={"n_layer": 3})

    def runner(s):
        stages = [st for st in build_stages(s, env) if st.name == "lm"]
        return StageRunner(tmp_path / "run", stages, dataclasses.asdict(s), log=lambda m: None)

    runner(settings).run()
    for model in ("baseline", "hybrid"):
        saved = json.loads(next((tmp_path / "run").glob(f"**/{model}/config.json")).read_text())
        assert saved["n_layer"] == 3
    plain = dataclasses.replace(settings, lm_model={})
    assert runner(plain).fingerprints["lm"] != runner(settings).fingerprints["lm"]
    again = runner(settings)
    again.run()
    assert again.reused == ["lm"]
