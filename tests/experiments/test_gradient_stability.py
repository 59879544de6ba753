"""``steerflow experiment gradient-stability`` (:mod:`steerflow.experiments.gradient_stability`)
end to end on ``tiny``: all three files, the keys the issue asks for, numbers that agree with the
runs' own logs."""

from __future__ import annotations

import json

from steerflow.cli.main import main
from steerflow.train.metrics import read_metrics

KEYS = {"params", "final_loss", "val_loss", "grad_norm_mean", "grad_norm_std", "vanishing_steps",
        "exploding_steps"}
HYBRID_KEYS = {"ode_grad_norm_mean", "alpha_start", "alpha_end"}


def test_gradient_stability_writes_table_json_and_figure(capsys, data_dir, cache_dir, tmp_path):
    out = tmp_path / "exp"
    args = ["experiment", "gradient-stability", "--config", "tiny", "--steps", "12", "--out",
            str(out), "--json", "--tokenizer", "bpe:300", "--data-dir", str(data_dir),
            "--cache-dir", str(cache_dir), "--batch-size", "4", "--eval-batches", "2",
            "--test-batches", "2", "--threads", "1", "--quiet"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)  # --json: one object, nothing else
    results = json.loads((out / "results.json").read_text())
    assert printed == results
    assert KEYS <= set(results["baseline"]) and KEYS | HYBRID_KEYS <= set(results["hybrid"])
    assert results["baseline"]["params"] > results["hybrid"]["params"]  # the ODE block is smaller
    assert results["paper"]["hybrid"]["alpha_end"] == 0.065

    for kind in ("baseline", "hybrid"):
        train = read_metrics(out / kind / "metrics.jsonl", "train")
        assert [r["step"] for r in train] == list(range(1, 13))  # same steps, same data order
        losses = [r["loss"] for r in train]
        assert abs(results[kind]["final_loss"] - sum(losses) / len(losses)) < 1e-9  # < 50 steps
    hybrid = read_metrics(out / "hybrid" / "metrics.jsonl", "train")
    assert results["hybrid"]["alpha_end"] == hybrid[-1]["alpha"]
    assert results["hybrid"]["alpha_start"] == 0.10000000149011612  # float32(0.1), before step 1

    table = (out / "table.md").read_text()
    assert "| final loss (mean of last 50 steps) |" in table and "6.449" in table and "0.065" in table
    png = (out / "fig1.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000

    # re-running reuses the finished runs (no retraining: the logs are untouched)
    before = (out / "hybrid" / "metrics.jsonl").read_bytes()
    assert main(args) == 0
    capsys.readouterr()
    assert (out / "hybrid" / "metrics.jsonl").read_bytes() == before


def test_bad_experiment_flags_exit_2(capsys, tmp_path):
    code = main(["experiment", "gradient-stability", "--config", "tiny", "--steps", "0",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "steps must be >= 1" in err and "Traceback" not in err
