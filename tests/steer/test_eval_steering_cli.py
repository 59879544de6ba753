"""``steerflow eval steering`` end to end on tiny checkpoints and a generated data folder."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from steerflow.cli.main import main
from steerflow.model.gpt import SteerFlowGPT

from .conftest import tiny_config

FAST = ["--prompts", "6", "--samples", "2", "--max-new-tokens", "6", "--sweep-points", "5",
        "--open-us=-1,0,1", "--actadd-coefs=-2,0,2", "--quiet", "--threads", "1"]


@pytest.fixture(scope="module")
def checkpoints(pretrained_dir, tmp_path_factory, tokenizer):
    """The pretrained model as base, a 'steered' copy with a changed field, an additive ablation."""
    root = tmp_path_factory.mktemp("eval-ckpts")
    base = SteerFlowGPT.from_pretrained(pretrained_dir)
    torch.manual_seed(6)
    with torch.no_grad():
        base.ode.field.fc_out.weight.normal_(std=0.3)  # u now moves the output
    base.save_pretrained(root / "steered")
    # as `train --task steer` leaves it: what the model was steered on picks the probe targets
    (root / "steered" / "train_config.json").write_text(json.dumps({"task": "steer",
                                                                     "steer_data": "cloze"}))
    additive = SteerFlowGPT(tiny_config(injection="add"))
    additive.tokenizer = tokenizer
    additive.save_pretrained(root / "additive")
    discrete = SteerFlowGPT(tiny_config(ode_span=None))
    discrete.tokenizer = tokenizer
    discrete.save_pretrained(root / "discrete")
    return root


@pytest.fixture(scope="module")
def evaluated(checkpoints, pretrained_dir, fake_data_dir, tmp_path_factory):
    """Run the command once; return its exit code, stdout and output folder."""
    out = tmp_path_factory.mktemp("eval-out")
    argv = ["eval", "steering", str(checkpoints / "steered"), "--base", str(pretrained_dir),
            "--ablation", str(checkpoints / "additive"), "--baseline", str(checkpoints / "discrete"),
            "--data-dir", str(fake_data_dir), "--out", str(out), "--json",
            "--judge-cache", str(out / "judge"), *FAST]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(argv)
    return code, stdout.getvalue(), out


def test_results_json_has_every_required_key(evaluated):
    code, stdout, out = evaluated
    assert code == 0
    printed = json.loads(stdout)  # --json: exactly one JSON object on stdout, nothing else
    saved = json.loads((out / "results.json").read_text())
    assert printed == saved
    for u in ("+1", "0", "-1"):
        assert {"p_good", "p_bad", "share"} <= set(saved["probe"][u])
        setting = saved["open_ended"][u]
        assert set(setting["positive_rate"]) == {"vader", "sst2-tfidf"}
        assert setting["perplexity"] > 1 and 0 <= setting["distinct_2"] <= 1
        assert set(setting["perplexities"]) == {"unsteered", "baseline"}
        assert setting["n"] == 6 * 2
    assert 0 <= saved["judge_dev_accuracy"] <= 1
    assert len(saved["sweep"]["u"]) == 5 and isinstance(saved["sweep"]["monotone"], bool)
    baselines = saved["baselines"]
    assert set(baselines) == {"no_control", "actadd", "additive"}
    assert set(baselines["actadd"]["open_ended"]) == {"-2", "0", "+2"}
    assert set(baselines["additive"]["open_ended"]) == {"-1", "0", "+1"}
    assert {"p_good", "p_bad"} <= set(baselines["additive"]["probe"]["+1"])
    for name in ("results.md", "fig2.png", "tradeoff.png"):
        assert (out / name).stat().st_size > 0
    assert "ode_beats_actadd_at_matched_perplexity" in saved["targets"]
    assert saved["steer_data"] == "cloze" and "cloze_p_good_at_+1>=0.98" in saved["targets"]
    assert not any(name.startswith("sst2_share") for name in saved["targets"])
    assert "Steering data: cloze" in (out / "results.md").read_text()


def test_actadd_at_zero_is_the_no_control_baseline(evaluated):
    _, _, out = evaluated
    saved = json.loads((out / "results.json").read_text())
    zero = saved["baselines"]["actadd"]["open_ended"]["0"]
    none = saved["baselines"]["no_control"]["open_ended"]["0"]
    # same base model, prompts and random numbers: identical continuations, identical scores
    assert zero["examples"] == none["examples"]
    assert zero["positive_rate"] == none["positive_rate"]
    assert zero["perplexity"] == none["perplexity"] and zero["distinct_2"] == none["distinct_2"]
    assert saved["baselines"]["actadd"]["probe"]["0"] == saved["baselines"]["no_control"]["probe"]


@pytest.mark.parametrize("flags, message", [
    (["--prompts", "0"], "prompts"),
    (["--top-p", "1.5"], "top-p"),
    (["--temperature", "0"], "temperature"),
    (["--open-us", "a,b"], "comma-separated"),
    (["--threads", "0"], "threads"),
])
def test_bad_flags_exit_2_with_one_line(checkpoints, fake_data_dir, capsys, flags, message):
    code = _exit_code(["eval", "steering", str(checkpoints / "steered"), "--data-dir",
                       str(fake_data_dir), *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_or_discrete_checkpoint_exit_2(checkpoints, fake_data_dir, tmp_path, capsys):
    assert _exit_code(["eval", "steering", str(tmp_path / "nope"), "--data-dir",
                       str(fake_data_dir)]) == 2
    assert _exit_code(["eval", "steering", str(checkpoints / "discrete"), "--data-dir",
                       str(fake_data_dir), *FAST]) == 2
    err = capsys.readouterr().err
    assert "no such checkpoint" in err and "hybrid" in err and "Traceback" not in err


def _exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse usage errors
        return int(exc.code)
