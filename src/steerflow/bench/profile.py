"""Where the time goes: ``torch.profiler`` top operators of hybrid and baseline, side by side."""

from __future__ import annotations

from typing import Callable


def top_ops(fn: Callable[[], object], reps: int = 3, row_limit: int = 12,
            device: str = "cpu") -> list[dict]:
    """The ``row_limit`` operators with the most self time over ``reps`` calls of ``fn``.

    Each row: operator, self time per call of ``fn`` (ms, the profiler's clock: wall time) and
    calls per call of ``fn``.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    fn()  # warm-up outside the trace
    with profile(activities=activities) as prof:
        for _ in range(reps):
            fn()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:row_limit]
    return [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3 / reps, "calls": e.count / reps}
            for e in events]


def side_by_side(hybrid: list[dict], baseline: list[dict]) -> list[tuple]:
    """Rows ``(op, hybrid ms, hybrid calls, baseline ms, baseline calls)`` over both top lists."""
    h = {r["op"]: r for r in hybrid}
    b = {r["op"]: r for r in baseline}
    ops = sorted(set(h) | set(b), key=lambda op: -max(h.get(op, {}).get("self_ms", 0.0),
                                                      b.get(op, {}).get("self_ms", 0.0)))
    rows = []
    for op in ops:
        hr, br = h.get(op), b.get(op)
        rows.append((op, f"{hr['self_ms']:.2f}" if hr else "-", f"{hr['calls']:g}" if hr else "-",
                     f"{br['self_ms']:.2f}" if br else "-", f"{br['calls']:g}" if br else "-"))
    return rows
