"""``steerflow eval invariance`` and ``steerflow eval probe`` end to end on a tiny checkpoint."""

from __future__ import annotations

import json
import random

import pytest

from steerflow.cli.main import main

WORDS = "the a movie film was is plot story very quite , . of and it on".split()


def _sst2_rows() -> list[tuple[str, int]]:
    """40 SST-2-like rows whose label word ends the sentence."""
    rng = random.Random(3)
    rows = []
    for i in range(40):
        label = i % 2
        words = [rng.choice(WORDS) for _ in range(6)] + ["good" if label else "bad"]
        rows.append((" ".join(words) + " ", label))
    return rows


@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_fake_data):
    """(checkpoint folder, baseline checkpoint folder, data folder, cache folder)."""
    import torch

    from steerflow.config import ModelConfig
    from steerflow.data import train_bpe
    from steerflow.model.gpt import SteerFlowGPT

    root = tmp_path_factory.mktemp("solver_cli")
    data = make_fake_data(root / "data", words=WORDS, length=(5, 15), sst2=_sst2_rows(),
                          wikitext=(("train", 200, 0), ("valid", 60, 1), ("test", 60, 2)))
    tokenizer = train_bpe((data / "wikitext-2" / "train.txt").read_text().splitlines(), 300)
    torch.manual_seed(0)
    ckpt, base = root / "ckpt", root / "base"
    SteerFlowGPT(ModelConfig.from_name("tiny")).save_pretrained(ckpt, tokenizer=tokenizer)
    SteerFlowGPT(ModelConfig.from_name("tiny", ode_span=None)).save_pretrained(base, tokenizer=tokenizer)
    return ckpt, base, data, root / "cache"


def _common(setup) -> list[str]:
    ckpt, _, data, cache = setup
    return [str(ckpt), "--data-dir", str(data), "--cache-dir", str(cache), "--batches", "1",
            "--batch-size", "2", "--quiet"]


def test_invariance_json_has_the_headline_keys(setup, capsys, single_thread, tmp_path):
    code = main(["eval", "invariance", *_common(setup), "--tolerances", "1e-3", "1e-5",
                 "--steps", "1", "4", "--json", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)  # exactly one JSON object on stdout
    for key in ("relative_divergence", "displacement_divergence", "kl", "top1_agreement",
                "loss_diff", "tolerance_sweep", "steps_sweep", "verdicts", "paper"):
        assert key in result, key
    assert result["train_solver"] == "euler, 4 steps"
    assert result["controls"] == [-1.0, 0.0, 1.0]
    assert {r["steps"] for r in result["steps_sweep"]} == {1, 4}
    assert set(result["verdicts"]) >= {"relative_divergence", "displacement_divergence", "kl",
                                       "top1_disagreement"}
    assert json.loads((tmp_path / "results.json").read_text())["kl"] == result["kl"]
    assert "| metric |" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "invariance_sweeps.png").stat().st_size > 0


def test_invariance_table_names_verdicts(setup, capsys, single_thread):
    code = main(["eval", "invariance", *_common(setup), "--tolerances", "1e-3", "--steps", "4",
                 "--controls", "0", "--solver", "euler:2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "euler, 2 steps" in out and ("PASS" in out or "FAIL" in out) and "0.068%" in out


def test_probe_json_and_files(setup, capsys, single_thread, tmp_path):
    code = main(["eval", "probe", *_common(setup), "--us", "-1", "1", "--tolerances", "1e-3",
                 "1e-6", "--tolerance-us", "0", "--examples", "2", "--folds", "2",
                 "--taus", "0", "0.5", "1", "--json", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)
    for key in ("nfe_vs_u", "solver_agreement", "nfe_vs_tolerance", "tolerance_summary",
                "linear_probes", "paper", "nfe_definitions"):
        assert key in result, key
    assert [r["tau"] for r in result["linear_probes"]["by_tau"]] == [0.0, 0.5, 1.0]
    for name in ("results.json", "table.md", "fig3.png", "fig4.png", "probe_accuracy.png"):
        assert (tmp_path / name).is_file(), name


@pytest.mark.parametrize("argv, message", [
    (["--batches", "0"], "positive integer"),
    (["--tolerances", "-1"], "positive number"),
    (["--solver", "rk9:4"], "unknown solver method"),
    (["--reference", "dopri5:abc"], "cannot parse solver spec"),
    (["--steps", "x"], "positive integer"),
])
def test_invariance_bad_flags_exit_2(setup, capsys, argv, message):
    code = _exit_code(["eval", "invariance", *_common(setup), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["--methods", "euler"], "adaptive solvers"),
    (["--taus", "0.5", "1"], "taus must increase from 0 to 1"),
    (["--folds", "1"], "folds must be >= 2"),
    (["--examples", "0"], "positive integer"),
])
def test_probe_bad_flags_exit_2(setup, capsys, argv, message):
    code = _exit_code(["eval", "probe", *_common(setup), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err


def test_bad_checkpoints_and_data_exit_2(setup, capsys, tmp_path):
    ckpt, base, data, cache = setup
    for kind in ("invariance", "probe"):
        assert main(["eval", kind, str(base), "--data-dir", str(data), "--quiet"]) == 2
        assert "baseline" in capsys.readouterr().err
        assert main(["eval", kind, str(tmp_path / "nope"), "--quiet"]) == 2
        assert "no such checkpoint" in capsys.readouterr().err
        assert main(["eval", kind, str(ckpt), "--data-dir", str(tmp_path), "--quiet"]) == 2
        assert "data folder" in capsys.readouterr().err


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse usage errors
        return int(exc.code)
