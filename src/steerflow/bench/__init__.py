"""Benchmarks of the hybrid against the discrete baseline, and of steerflow against its peers
(``steerflow bench``, ``steerflow bench --peers``).

* :mod:`~steerflow.bench.suite` — :func:`run_bench` / :func:`write_bench`, the whole run;
* :mod:`~steerflow.bench.options` — :class:`BenchOptions`, what to run at which shapes;
* :mod:`~steerflow.bench.benchmarks` — one function per benchmark of the hybrid vs its baseline;
* :mod:`~steerflow.bench.peers` — against ``transformers``' GPT-2 on the same weights;
* :mod:`~steerflow.bench.steer_speed` — ODE steering against guidance, DExperts and ActAdd;
* :mod:`~steerflow.bench.startup` — the command line's start-up, in fresh processes;
* :mod:`~steerflow.bench.flops` — analytic FLOPs per token (forward, backprop, adjoint);
* :mod:`~steerflow.bench.memory` — peak tensor memory of one training step;
* :mod:`~steerflow.bench.timing` — alternating, warmed-up, repeated timings with medians and IQRs;
* :func:`steerflow.io.machine_info` — what the numbers were measured on.
"""

from steerflow.bench.flops import FlopCount, flop_ratio, flops_per_token
from steerflow.bench.options import BENCHMARKS, BenchOptions
from steerflow.bench.suite import run_bench, write_bench

__all__ = ["BENCHMARKS", "BenchOptions", "FlopCount", "flop_ratio", "flops_per_token", "run_bench",
           "write_bench"]
