"""``steerflow info`` and the top-level command: JSON and table output, the ``python -m``
entry point, ``--help``, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import steerflow
from steerflow.cli.main import COMMANDS, main

PAPER_BASELINE = 30_503_424
# paper hybrid = baseline − 2 blocks + the ODE block, each counted from its layer shapes (d = 256)
_BLOCK = 2 * (2 * 256) + (256 * 768 + 768) + (256 * 256 + 256) + (256 * 1024 + 1024) + (1024 * 256 + 256)
_ODE = 2 * 256 + ((256 + 1 + 1) * 256 + 256) + (256 * 256 + 256) + 1
PAPER_HYBRID = PAPER_BASELINE - 2 * _BLOCK + _ODE


def _json_of(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out)  # exactly one JSON object: json.loads rejects anything after it


def test_info_paper_baseline_json(capsys):
    info = _json_of(capsys, ["info", "--config", "paper", "--model", "baseline", "--json"])
    assert info["params"] == PAPER_BASELINE
    assert info["ode_params"] == 0
    assert info["layers"] == [f"block {i}" for i in range(6)]
    assert info["config"]["ode_span"] is None


def test_info_paper_hybrid_json(capsys):
    info = _json_of(capsys, ["info", "--config", "paper", "--json"])
    assert PAPER_HYBRID == 29_056_513
    assert info["params"] == PAPER_HYBRID
    assert info["ode_params"] == _ODE
    assert info["per_layer_params"]["ode"] == _ODE
    assert info["per_layer_params"]["block 0"] == _BLOCK


def test_info_table_for_people(capsys):
    assert main(["info", "--config", "paper", "--model", "baseline"]) == 0
    out = capsys.readouterr().out
    assert "total 30,503,424" in out
    assert "| layer | params |" in out and "| block 5 | 789,760 |" in out


def test_info_on_a_checkpoint_folder(make_tiny_model, tmp_path, capsys):
    model = make_tiny_model(field="block")
    model.save_pretrained(tmp_path / "ckpt")
    info = _json_of(capsys, ["info", str(tmp_path / "ckpt"), "--json"])
    assert info["params"] == model.num_params()
    assert info["config"]["field"] == "block"


def test_python_dash_m_entry_point():
    src = str(Path(steerflow.__file__).resolve().parents[1])  # works installed or from src/
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "steerflow", "info", "--config", "paper", "--model", "baseline",
         "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["params"] == PAPER_BASELINE


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name, _ in COMMANDS:
        assert f"    {name} " in out or f"    {name}\n" in out, name


def test_no_subcommand_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: steerflow" in capsys.readouterr().out


@pytest.mark.parametrize("argv, fragment", [
    (["info", "/no/such/checkpoint"], "not a steerflow checkpoint folder"),
    (["info", "--config", "huge"], "unknown config 'huge'"),
])
def test_bad_source_is_one_line_on_stderr_and_exit_2(argv, fragment, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("steerflow: error:") and fragment in lines[0]
    assert "Traceback" not in captured.err


def test_pickle_checkpoint_is_refused_by_info(tmp_path, capsys):
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")  # a pickle of the int 1
    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "pytorch_model.bin, a pickle file" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [
    ["info"],  # neither a checkpoint nor --config
    ["info", "ckpt", "--config", "tiny"],  # both
    ["info", "--config", "tiny", "--model", "huge"],
    ["info", "--config", "tiny", "--bogus"],
    ["nonexistent-command"],
])
def test_bad_flags_exit_2_without_traceback(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
