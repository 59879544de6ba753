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


def _target(result: dict, key: str) -> str:
    t = result.get("targets", {}).get(key)
    return f"{t['target']} ({'met' if t['met'] else 'MISSED'})" if t else ""


def peer_rows(result: dict) -> list[tuple]:
    """(figure, model, ratio, IQR, transformers vs steerflow absolute, target) against
    transformers."""
    peers = result["peers"]
    rows = []
    for figure, detail in peers["detail"].items():
        for model in ("baseline", "hybrid"):
            if "tokens_per_s" in detail:
                tps = detail["tokens_per_s"]
                absolute = f"{tps['transformers']:.0f} vs {tps[model]:.0f} tok/s"
            else:
                absolute = (f"{detail['ms']['transformers']['median_ms']:.1f} vs "
                            f"{detail['ms'][model]['median_ms']:.1f} ms")
            rows.append((figure, model, f"{peers[model][figure]:.3f}",
                         _spread(detail["ratio"][model]), absolute,
                         _target(result, f"peers.{model}.{figure}")))
    return rows


def steer_rows(result: dict) -> list[tuple]:
    """(method, tokens/s, ODE's speed over it) for the steered-generation figures."""
    s = result["steer_speed"]
    rows = [(name, f"{s[name]:.1f}", f"{s['ode'] / s[name]:.2f}")
            for name in ("unsteered", "ode", "guidance", "dexperts", "actadd")]
    rows.append(("ode_over_dexperts", f"{s['ode_over_dexperts']:.3f}",
                 _target(result, "steer_speed.ode_over_dexperts")))
    rows.append(("ode_over_unsteered", f"{s['ode_over_unsteered']:.3f}",
                 _target(result, "steer_speed.ode_over_unsteered")))
    return rows


def startup_rows(result: dict) -> list[tuple]:
    """(figure, median s, IQR s, command, target) for the start-up figures."""
    st = result["startup"]
    detail = st["detail"]
    rows = [(key, f"{st[key]:.3f}", f"{detail['s'][key]['iqr_s']:.3f}", detail["commands"][key],
             _target(result, f"startup.{key}"))
            for key in ("import_s", "help_s", "time_to_first_token_s")]
    rows.append(("torch_import_s", f"{detail['torch_import_s']:.3f}",
                 f"{detail['s']['torch_import_s']['iqr_s']:.3f}",
                 detail["commands"]["torch_import_s"], "(the floor under the first token)"))
    return rows


def _peer_sections(result: dict) -> list[str]:
    lines = []
    if "peers" in result:
        p = result["peers"]
        tf = p["transformers"]
        lines += ["", f"against transformers {tf['version']} {tf['model']} ({tf['attention']}, "
                      f"{tf['params']:,} params; logits agree to "
                      f"{p['agreement']['logits_max_abs_diff']:.1e}): transformers' time / "
                      f"steerflow's",
                  format_table(["figure", "steerflow", "ratio", "IQR", "transformers vs steerflow",
                                "target"], peer_rows(result))]
    if "steer_speed" in result:
        d = result["steer_speed"]["detail"]
        lines += ["", f"steered generation, batch 1, {d['new_tokens']} new tokens, "
                      f"{d['sampling']} (tokens/s; the ODE's speed over each)",
                  format_table(["method", "tokens/s", "ode / method"], steer_rows(result))]
    if "startup" in result:
        lines += ["", f"start-up, fresh processes, wall clock "
                      f"({result['startup']['detail']['checkpoint']})",
                  format_table(["figure", "median s", "IQR s", "command", "target"],
                               startup_rows(result))]
    return lines


def format_report(result: dict) -> str:
    """The Markdown report: what ran where, then one row per headline figure."""
    shapes = result["shapes"]
    params = result.get("params")
    lines = [
        f"steerflow bench: config {result['config']}, batch {shapes['batch_size']} x "
        f"{shapes['seq_len']} tokens, {result['options']['clock']} clock, hybrid "
        f"{result['hybrid']['solver']}"
        + (f" ({params['hybrid']:,} vs {params['baseline']:,} params)" if params else ""),
        f"{result['date']} | {describe(result['machine'])} | malloc {result['runtime']['malloc']}",
    ]
    rows = headline_rows(result)
    if rows:
        lines += ["", format_table(["figure", "value", "IQR", "target", "detail"], rows)]
    for what, tables in result.get("profile", {}).items():
        lines += ["", f"torch.profiler top operators, {what} (self ms per call, calls per call)",
                  format_table(["operator", "hybrid ms", "calls", "baseline ms", "calls"],
                               side_by_side(tables["hybrid"], tables["baseline"]))]
    return "\n".join(lines + _peer_sections(result))
