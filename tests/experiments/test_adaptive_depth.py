"""``steerflow experiment adaptive-depth`` (:mod:`steerflow.experiments.adaptive_depth`) end to
end on ``tiny``: the three files, the keys the issue asks for, a full-grid tolerance that
reproduces the fixed grid exactly (loss and steering) and a loose one that halves the depth."""

from __future__ import annotations

import json

import pytest

from steerflow.cli.main import main




@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_story_data, story_reviews):
    """(checkpoint folder, data folder, cache folder): a tiny hybrid with its tokenizer."""
    import torch

    from steerflow.config import ModelConfig
    from steerflow.data import train_bpe
    from steerflow.model.gpt import SteerFlowGPT

    root = tmp_path_factory.mktemp("adaptive")
    data, texts = make_story_data(root / "data", lines=(("train", 120, 0), ("valid", 40, 1),
                                                        ("test", 20, 2)), repeat=6)
    positive, negative = story_reviews
    tokenizer = train_bpe(texts["train"].splitlines() + list(positive + negative), 300)
    torch.manual_seed(0)
    ckpt = root / "ckpt"
    SteerFlowGPT(ModelConfig.from_name("tiny", vocab_size=300)).save_pretrained(
        ckpt, tokenizer=tokenizer)
    return ckpt, data, root / "cache"


def test_adaptive_depth_writes_the_points_and_reproduces_the_fixed_grid(setup, capsys, tmp_path):
    ckpt, data, cache = setup
    out = tmp_path / "exp"
    code = main(["experiment", "adaptive-depth", str(ckpt), "--data-dir", str(data),
                 "--cache-dir", str(cache), "--tolerances", "1e-12", "1", "--coarse-steps", "2",
                 "--batches", "1", "--batch-size", "2", "--prompts", "3", "--samples", "2",
                 "--new-tokens", "4", "--threads", "1", "--quiet", "--json", "--out", str(out)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)  # --json: one object, nothing else
    results = json.loads((out / "results.json").read_text())
    assert printed == results
    assert results["fixed_grid_evals_per_token"] == 4.0  # euler, 4 steps
    assert [p["tolerance"] for p in results["points"]] == [1e-12, 1.0]
    for point in results["points"]:
        assert {"tolerance", "evals_per_token", "val_loss", "val_loss_delta", "steering_delta",
                "tokens_per_s"} <= set(point)
        assert sum(point["evals_histogram"].values()) == pytest.approx(1.0)
        assert set(point["by_u"]) == {"-1", "+0", "+1"}
    tight, loose = results["points"]
    # a tolerance that forces the full grid is the fixed grid: same loss, same samples
    assert tight["evals_per_token"] == 4.0 and tight["val_loss_delta"] == 0.0
    assert tight["steering_delta"] == 0.0 and tight["probe_delta"] == 0.0
    assert tight["positive_rate"] == results["fixed_grid"]["positive_rate"]
    # an untrained field (α·F ≈ 1e-3 of H) passes any loose tolerance after one cell
    assert loose["evals_per_token"] == 2.0 and loose["eval_saving"] == 0.5
    assert results["coarse"][0]["steps"] == 2 and results["coarse"][0]["evals_per_token"] == 2.0
    assert results["paper"]["train_solver"] == "euler, 4 steps"
    assert "| solver | evals/token |" in (out / "table.md").read_text()
    assert (out / "adaptive_depth.png").stat().st_size > 0
