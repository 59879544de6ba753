"""Benchmarks of the hybrid against the discrete baseline (``steerflow bench``).

* :mod:`~steerflow.bench.suite` — the benchmarks and :func:`run_bench`;
* :mod:`~steerflow.bench.flops` — analytic FLOPs per token (forward, backprop, adjoint);
* :mod:`~steerflow.bench.memory` — peak tensor memory of one training step;
* :mod:`~steerflow.bench.timing` — alternating, warmed-up, repeated timings with medians and IQRs;
* :func:`steerflow.io.machine_info` — what the numbers were measured on.
"""

from steerflow.bench.flops import FlopCount, flop_ratio, flops_per_token
from steerflow.bench.suite import BENCHMARKS, BenchOptions, run_bench

__all__ = ["BENCHMARKS", "BenchOptions", "FlopCount", "flop_ratio", "flops_per_token", "run_bench"]
