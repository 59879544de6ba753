"""Tables for people (Markdown) from a :func:`~steerflow.bench.suite.run_bench` result (machines
get the same result as JSON: :func:`~steerflow.bench.suite.write_bench`)."""

from __future__ import annotations

from steerflow.bench.profile import side_by_side
from steerflow.io import describe_machine as describe
from steerflow.io import format_table


def _ms(d: dict) -> str:
    return f"{d['median_ms']:.2f} ± {d['iqr_ms'] / 2:.2f} ms"


def _spread(r: dict) -> str:
    return f"[{r['q1']:.3f}, {r['q3']:.3f}]"


def headline_rows(result: dict) -> list[tuple]:
    """(metric, value, IQR of the per-round ratios, target, detail) for each measured figure."""
    targets = result.get("targets", {})
    rows = []

    def add(key: str, spread: str, detail: str) -> None:
        if key not in result:
            return
        t = targets.get(key)
        target = f"{t['target']} ({'met' if t['met'] else 'MISSED'})" if t else ""
        rows.append((key, f"{result[key]:.3f}", spread, target, detail))

    if "latency" in result:
        lat = result["latency"]
        add("latency_ratio", _spread(lat["ratio"]), f"hybrid {_ms(lat['hybrid'])}, baseline "
            f"{_ms(lat['baseline'])} per batch")
        add("flop_ratio", "", f"analytic forward FLOPs/token; {lat['gflops_per_batch']['hybrid']:.2f}"
            f" vs {lat['gflops_per_batch']['baseline']:.2f} GFLOP per batch")
        add("latency_over_flop", "", "time ratio / FLOP ratio (ODE machinery overhead)")
    if "generate" in result:
        g = result["generate"]
        tps, cs = g["tokens_per_s"], g["cache_speedup"]
        add("generate_ratio", _spread(g["ratio"]),
            f"KV cache {tps['hybrid_cache']:.0f} vs {tps['baseline_cache']:.0f} tok/s; cache/recompute "
            f"hybrid {cs['hybrid']:.2f}x, baseline {cs['baseline']:.2f}x (batch {g['batch']})")
    if "train" in result:
        tr = result["train"]
        tps = tr["tokens_per_s"]
        add("train_ratio", _spread(tr["ratio"]),
            f"{tps['hybrid']:.0f} vs {tps['baseline']:.0f} tok/s ({tr['solver']}); direct backprop "
            f"{tr['ratio_direct']:.3f}; FLOP ratio {tr['flop_ratio']:.3f}")
    if "memory" in result:
        m = result["memory"]
        lo, hi = m["steps"]
        for mode in ("adjoint", "direct"):
            peaks = m["peak_mb"][f"ode_{mode}"]
            detail = f"ODE block: {peaks[str(lo)]:.1f} -> {peaks[str(hi)]:.1f} MB ({lo} -> {hi} steps)"
            if f"model_{mode}" in m["growth"]:
                mp = m["peak_mb"][f"model_{mode}"]
                detail += (f"; whole step {mp[str(lo)]:.0f} -> {mp[str(hi)]:.0f} MB "
                           f"({m['growth'][f'model_{mode}']:.2f}x)")
            add(f"{mode}_memory_growth", "", detail)
    if "mfu_detail" in result:
        d = result["mfu_detail"]
        add("mfu", "", f"{d['achieved_gflops']['hybrid']:.1f} GFLOP/s; {d['peak_matmul']['n']}² "
            f"{d['peak_matmul']['dtype']} matmul {d['peak_gflops']:.1f} GFLOP/s in the same rounds "
            f"(fastest {d['fastest_peak_gflops']:.1f}); baseline {d['mfu']['baseline']:.3f}")
    if "solver" in result:
        s = result["solver"]
        add("solver_overhead", _spread(s["ratio"]),
            f"ODE block torchdiffeq {_ms(s['torchdiffeq'])} vs fused {_ms(s['fused'])} "
            f"({s['solver']}, max |diff| {s['max_abs_diff']:.1e})")
    if "compiled" in result:
        comp = result["compiled"]
        speed = comp.get("speedup_over_eager", {})
        rows.append(("compiled latency_ratio", f"{comp['latency_ratio']:.3f}", _spread(comp["ratio"]),
                     "", f"torch.compile: hybrid {_ms(comp['hybrid'])}, baseline "
                         f"{_ms(comp['baseline'])}; compile {comp['compile_s']['hybrid']:.0f} s / "
                         f"{comp['compile_s']['baseline']:.0f} s"
                     + (f"; {speed['hybrid']:.2f}x / {speed['baseline']:.2f}x eager" if speed else "")))
    return rows


def format_report(result: dict) -> str:
    """The Markdown report: what ran where, then one row per headline figure."""
    shapes = result["shapes"]
    lines = [
        f"steerflow bench: config {result['config']}, batch {shapes['batch_size']} x "
        f"{shapes['seq_len']} tokens, {result['options']['clock']} clock, hybrid "
        f"{result['hybrid']['solver']} "
        f"({result['params']['hybrid']:,} vs {result['params']['baseline']:,} params)",
        f"{result['date']} | {describe(result['machine'])} | malloc {result['runtime']['malloc']}",
        "",
        format_table(["figure", "value", "IQR", "target", "detail"], headline_rows(result)),
    ]
    for what, tables in result.get("profile", {}).items():
        lines += ["", f"torch.profiler top operators, {what} (self ms per call, calls per call)",
                  format_table(["operator", "hybrid ms", "calls", "baseline ms", "calls"],
                               side_by_side(tables["hybrid"], tables["baseline"]))]
    return "\n".join(lines)
