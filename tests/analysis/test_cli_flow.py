"""``steerflow analyze flow`` end to end on tiny checkpoints and generated data, and bad flags."""

from __future__ import annotations

import json

import pytest

from steerflow.cli.main import main

# small but complete: every stage runs (two u values, refinement with 2 training iterations)
FAST = ["--controls=-1,1", "--steps", "2,4,8,16", "--grid-points", "5", "--traj-steps", "8",
        "--lanczos-iters", "32", "--batch-size", "1", "--loss-batches", "2",
        "--refinement-iters", "2", "--refinement-train-steps", "2", "--refinement-basis", "1",
        "--refinement-width", "16"]


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _common(env) -> list[str]:
    return ["--data-dir", str(env["data"]), "--cache-dir", str(env["cache"])]


def test_json_run_has_every_key_and_writes_the_files(flow_env, tmp_path, capsys):
    out = tmp_path / "flow"
    code, stdout, stderr = run_cli(
        ["analyze", "flow", str(flow_env["hybrid"]), "--out", str(out), "--json",
         "--baseline", str(flow_env["baseline"]), "--compare", str(flow_env["contractive"]),
         *_common(flow_env), *FAST], capsys)
    assert code == 0, stderr
    results = json.loads(stdout)  # exactly one JSON object on stdout
    assert results == json.loads((out / "results.json").read_text())
    for key in ("order", "mu", "bound_violations", "contractive", "convergence", "perturbation",
                "discrete", "refinement"):
        assert key in results
    # the real solver path keeps its orders on a (random) trained-size field
    for method, order in (("euler", 1), ("midpoint", 2), ("rk4", 4)):
        assert abs(results["order"][method] + order) < 0.3, results["convergence"]
    assert results["bound_violations"]["count"] == 0
    c = results["contractive"]
    assert c["contractive"]["mu"]["max"] < 0 < c["unconstrained"]["mu"]["max"]
    assert set(c) >= {"val_loss_cost", "unconstrained", "contractive"}
    assert [row["layer"] for row in results["discrete"]["baseline"]] == [f"block {i}" for i in range(4)]
    assert [m["basis"] for m in results["refinement"]["models"]] == [
        "legendre", "piecewise", "linear", "piecewise", "linear"]
    for name in ("convergence.png", "mu_hist.png", "perturbation.png", "discrete_layers.png",
                 "refinement.png", "report.md"):
        assert (out / name).stat().st_size > 0
    assert "Convergence order" in (out / "report.md").read_text()


BAD = [
    (["--steps", "1,x"], "invalid"),
    (["--controls", "a"], "invalid"),
    (["--grid-points", "6", "--traj-steps", "8"], "divide"),
    (["--refinement-basis", "8", "--refinement-train-steps", "8"], "refinement_basis"),
    (["--eps", "0.5"], "eps"),
    (["--methods", "heun"], "heun"),
    (["--lanczos-iters", "0"], "lanczos_iters"),
    (["--no-such-flag"], "unrecognized"),
]


@pytest.mark.parametrize("extra,message", BAD)
def test_bad_flags_exit_2_without_traceback(flow_env, tmp_path, capsys, extra, message):
    code, stdout, stderr = run_cli(["analyze", "flow", str(flow_env["hybrid"]), "--out",
                                    str(tmp_path / "o"), *_common(flow_env), "--no-refinement",
                                    *extra], capsys)
    assert code == 2
    assert message in stderr and "Traceback" not in stderr and stdout == ""


def test_bad_inputs_exit_2(flow_env, tmp_path, capsys):
    cases = [
        ([str(tmp_path / "missing")], "no such checkpoint"),
        ([str(flow_env["baseline"])], "discrete model"),
        ([str(flow_env["hybrid"]), "--data-dir", str(tmp_path / "nodata")], "does not exist"),
    ]
    for args, message in cases:
        code, _, stderr = run_cli(["analyze", "flow", *args, "--out", str(tmp_path / "o"),
                                   "--no-refinement"], capsys)
        assert code == 2 and message in stderr and "Traceback" not in stderr, (args, stderr)
