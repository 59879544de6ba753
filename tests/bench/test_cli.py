"""``steerflow bench``: the quick run reports every figure as a finite positive number, and bad
flags exit with code 2 and one line."""

import contextlib
import io
import json
import math

import pytest
import torch

from steerflow.bench.benchmarks import Contenders, bench_solver, build_models
from steerflow.bench.options import BenchOptions
from steerflow.bench.suite import HEADLINE_KEYS
from steerflow.cli.main import main
from steerflow.config import ModelConfig, SolverSpec
from steerflow.errors import ConfigError


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One ``steerflow bench --quick --json --out FILE`` run, shared by the tests below."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    stdout = io.StringIO()
    threads = torch.get_num_threads()  # --quick sets one thread for this process: give it back
    try:
        with contextlib.redirect_stdout(stdout):
            code = main(["bench", "--quick", "--json", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return code, stdout.getvalue(), out


def test_quick_json_has_every_figure_finite_and_positive(quick):
    code, stdout, _ = quick
    assert code == 0
    result = json.loads(stdout)  # exactly one JSON object on stdout
    for key in HEADLINE_KEYS:
        assert key in result, key
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0, key
    assert result["config"] == "tiny"
    for key in ("cpu", "cores", "torch", "device", "torch_threads", "load_average"):
        assert key in result["machine"]
    # side-by-side figures are consistent with their own details
    lat = result["latency"]
    assert lat["ratio"]["q1"] <= result["latency_ratio"] <= lat["ratio"]["q3"]
    assert result["latency_over_flop"] == pytest.approx(result["latency_ratio"] / result["flop_ratio"])
    assert result["direct_memory_growth"] > 4 > 1.25 > result["adjoint_memory_growth"]
    assert result["solver"]["max_abs_diff"] < 1e-5


def test_out_file_holds_the_same_result(quick):
    _, stdout, out = quick
    assert json.loads(out.read_text()) == json.loads(stdout)


def test_solver_overhead_times_two_paths_that_agree(tiny_config):
    """The two timed solves compute the same H(1) (fused loop vs torchdiffeq, float32)."""
    opts = BenchOptions.quick_options(reps=1, warmup=0)
    for method in ("euler", "midpoint", "rk4"):
        config = tiny_config.replace(train_solver=SolverSpec(method=method, steps=3, adjoint=True))
        hybrid, baseline = build_models(config, "cpu", 0)
        with torch.no_grad():  # give the field O(1) output so that the comparison is not vacuous
            hybrid.ode.field.fc_out.weight.normal_(std=0.3)
            hybrid.ode.alpha.fill_(0.5)
        c = Contenders(hybrid.eval(), baseline.eval(), torch.randint(0, 512, (2, 16)),
                       config.train_solver)
        out = bench_solver(c, config, opts)
        # same arithmetic in a different order: float32 rounding of O(1) values, a few ulps
        assert out["solver"]["max_abs_diff"] < 1e-5
        assert out["solver"]["solver"] == f"{method}, 3 steps"


@pytest.mark.parametrize("argv", [
    ["bench", "--config", "huge"],
    ["bench", "--only", "latency,nothing"],
    ["bench", "--reps", "0"],
    ["bench", "--batch-size", "-1"],
    ["bench", "--device", "tpu"],
    ["bench", "--quick", "--seq-len", "999"],
])
def test_bad_flags_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        code = main(argv)
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_options_validate():
    with pytest.raises(ConfigError, match="memory_steps"):
        BenchOptions(memory_steps=(64, 4))
    with pytest.raises(ConfigError, match="unknown benchmark"):
        BenchOptions(only=("speed",))
    with pytest.raises(ConfigError, match="seq_len"):
        BenchOptions(config="tiny", seq_len=33).resolved_seq_len(ModelConfig.from_name("tiny"))
