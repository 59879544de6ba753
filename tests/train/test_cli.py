"""``steerflow train`` on the command line: bad flags exit with code 2 and one line, no traceback."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from steerflow.cli.main import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def base_flags(data_dir, cache_dir, tmp_path):
    return ["train", "--config", "tiny", "--tokenizer", "bpe:300", "--data-dir", str(data_dir),
            "--cache-dir", str(cache_dir), "--threads", "1", "--quiet", "--out", str(tmp_path / "run")]


@pytest.mark.parametrize("flags, needle", [
    (["--steps", "-1"], "steps must be >= 1"),
    (["--steps", "abc"], "invalid int value"),
    (["--model", "resnet"], "invalid choice"),
    (["--config", "nope"], "neither a preset"),
    (["--set", "alpha_init"], "KEY=VALUE"),
    (["--set", "alpha_iniit=0.2"], "unknown model override"),
    (["--set", "alpha_init=-1"], "alpha_init must be a positive"),
    (["--task", "steer"], "--from CKPT"),
    (["--task", "steer", "--from", "/no/such/ckpt"], "no such checkpoint"),
    (["--on-nonfinite", "maybe"], "invalid choice"),
    (["--batch-size", "6", "--grad-accum", "4"], "not divisible by grad_accum"),
    (["--lr", "nan"], "lr must be a positive"),
    (["--dtype", "float16"], "invalid choice"),
    (["--device", "tpu"], "unknown device"),
    (["--data-dir", "/no/such/folder"], "does not exist"),
    (["--tokenizer", "bpe:abc"], "unknown tokenizer spec"),
])
def test_bad_flags_exit_2_with_one_line(capsys, base_flags, flags, needle):
    code, out, err = run_cli(capsys, *base_flags, *flags)
    assert code == 2
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2  # argparse: usage line + error line; ours: one line
    assert out == ""


def test_missing_out_is_a_usage_error(capsys):
    code, _, err = run_cli(capsys, "train", "--config", "tiny")
    assert code == 2 and "--out" in err


def test_json_run_then_refuses_to_overwrite_and_resume_changes_nothing(capsys, base_flags, tmp_path):
    code, out, _ = run_cli(capsys, *base_flags, "--steps", "3", "--json")
    assert code == 0
    summary = json.loads(out)  # --json: exactly one JSON object on stdout
    assert summary["completed"] and summary["step"] == 3
    assert set(summary["evals"]) == {"valid", "test"} and "word_ppl" in summary["evals"]["test"]
    run = tmp_path / "run"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "metrics.jsonl",
                 "train_config.json", "summary.json"):
        assert (run / name).is_file(), name
    weights = load_file(str(run / "model.safetensors"))

    code, _, err = run_cli(capsys, *base_flags, "--steps", "3")
    assert code == 2 and "already holds a training run" in err  # never overwritten silently
    code, _, err = run_cli(capsys, *base_flags, "--steps", "4", "--resume")
    assert code == 2 and "steps: 3 -> 4" in err
    code, _, _ = run_cli(capsys, *base_flags, "--steps", "3", "--resume")
    assert code == 0  # a finished run resumes to its end at once: same weights
    again = load_file(str(run / "model.safetensors"))
    assert all(torch.equal(weights[k], again[k]) for k in weights)

    from steerflow.model.gpt import SteerFlowGPT

    model = SteerFlowGPT.from_pretrained(run)  # the run folder is a loadable model, tokenizer too
    assert model.tokenizer is not None and model.tokenizer.name == "bpe:300"


def test_resume_without_checkpoint_starts_fresh_and_says_so(capsys, base_flags):
    flags = [f for f in base_flags if f != "--quiet"]
    code, _, err = run_cli(capsys, *flags, "--steps", "2", "--resume")
    assert code == 0
    assert "no checkpoint" in err and "starting from step 0" in err
