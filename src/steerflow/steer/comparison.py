"""Comparing steering methods on one evaluation's results: the best target-sentiment rate of each
method within a perplexity budget, whether the ODE beats another method beyond sampling noise,
and the issue's targets.

Everything here reads the JSON-ready results dict of :func:`steerflow.steer.evaluate.evaluate_steering`
(no torch), so it applies as well to a ``results.json`` read back from disk.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from steerflow.experiments.paper import PPL_BUDGET, STEERING_TARGETS

#: one-sided 95 % normal quantile: "beats" needs a rate difference this many standard errors wide
BEATS_Z = 1.645
#: the methods in the order tables and figures show them
METHOD_ORDER = ("ode", "no_control", "guidance", "dexperts", "actadd", "additive")
#: methods the ODE must beat at matched perplexity (targets), when they ran
TARGET_RIVALS = ("actadd", "dexperts")
#: judges that are reported but never gate a target when ``results["judges"]["gates"]`` is absent
LEXICON_JUDGES = ("vader",)


def u_key(u: float) -> str:
    """The results.json key of a control value: ``+1``, ``0``, ``-0.5``."""
    return "0" if u == 0 else f"{u:+g}"


def method_settings(results: dict[str, Any]) -> dict[str, dict[str, dict]]:
    """Every method's open-ended settings, ``{method: {value key: setting}}``, in table order."""
    found = {"ode": results.get("open_ended", {})}
    for name, section in results.get("baselines", {}).items():
        if isinstance(section, dict) and "open_ended" in section:
            found[name] = section["open_ended"]
    order = [m for m in METHOD_ORDER if m in found] + [m for m in found if m not in METHOD_ORDER]
    return {m: found[m] for m in order}


def target_positive_rate(setting: dict[str, Any]) -> float:
    """The positive rate a comparison uses: the mean over the classifier judges when recorded
    (``classifier_positive_rate``), else the mean over all judges."""
    rate = setting.get("classifier_positive_rate")
    if rate is None or (isinstance(rate, float) and math.isnan(rate)):
        return setting["mean_positive_rate"]
    return rate


def tradeoff(methods: dict[str, dict[str, dict]], reference_ppl: float,
             budget: float = PPL_BUDGET, scorer: Optional[str] = None) -> dict[str, Any]:
    """Best target-sentiment rate of each method within a perplexity budget, per direction.

    The target rate of a setting is its positive rate (:func:`target_positive_rate`) for the
    positive direction (settings with value ≥ 0) and one minus it for the negative direction
    (value ≤ 0). The budget is ``budget × reference_ppl`` (the unsteered model's u = 0
    continuations), i.e. "at matched perplexity": each method may use any of its settings that
    stay that fluent. Perplexity is the headline one, or ``perplexities[scorer]``.
    """
    limit = budget * reference_ppl
    out: dict[str, Any] = {"reference_perplexity": reference_ppl, "budget": budget,
                           "perplexity_limit": limit, "scorer": scorer, "best": {}}
    for name, settings in methods.items():
        out["best"][name] = {direction: _best(settings, sign, limit, scorer)
                             for direction, sign in (("positive", 1), ("negative", -1))}
    return out


def _perplexity(setting: dict[str, Any], scorer: Optional[str]) -> float:
    ppl = setting["perplexity"] if scorer is None else setting["perplexities"][scorer]
    return math.nan if ppl is None else ppl


def _best(settings: dict[str, dict], sign: int, limit: float,
          scorer: Optional[str]) -> Optional[dict[str, Any]]:
    """The setting of one direction with the highest target rate within ``limit``, or None."""
    ok = [s for s in settings.values()
          if sign * s["value"] >= 0 and _perplexity(s, scorer) <= limit]
    if not ok:
        return None
    rates = [target_positive_rate(s) if sign > 0 else 1 - target_positive_rate(s) for s in ok]
    i = int(np.argmax(rates))
    best = {"rate": rates[i], "value": ok[i]["value"], "perplexity": _perplexity(ok[i], scorer),
            "n": ok[i].get("n")}
    ci = ok[i].get("classifier_positive_rate_ci")
    if ci is not None and None not in ci:
        best["ci"] = [ci[0], ci[1]] if sign > 0 else [1 - ci[1], 1 - ci[0]]
    return best


def rate_difference_z(mine: dict, theirs: dict) -> float:
    """z-score of ``mine["rate"] − theirs["rate"]`` for two independent samples of sizes ``n``.

    The binomial standard error ``sqrt(p(1 − p)/n)`` of each rate; for a rate averaged over judges
    that label the same samples it is an upper bound, so the z-score is conservative. Without
    ``n`` (older results) the difference counts as exact.
    """
    diff = mine["rate"] - theirs["rate"]
    var = (sum(r["rate"] * (1 - r["rate"]) / r["n"] for r in (mine, theirs))
           if mine.get("n") and theirs.get("n") else 0.0)
    if var > 0:
        return diff / math.sqrt(var)
    return math.copysign(math.inf, diff) if diff else 0.0  # no sampling error known: exact


def ode_beats(trade: dict[str, Any], other: str, z: float = BEATS_Z) -> Optional[bool]:
    """Whether the ODE's best rate within the budget beats ``other``'s in both directions.

    Beating means a difference wider than ``z`` standard errors (default: one-sided 95 %); a
    direction where ``other`` has no setting within the budget is won by having one.
    """
    best = trade["best"]
    if "ode" not in best or other not in best:
        return None
    for direction in ("positive", "negative"):
        mine, theirs = best["ode"][direction], best[other][direction]
        if mine is None:
            return False
        if theirs is not None and rate_difference_z(mine, theirs) <= z:
            return False
    return True


def comparison(trade: dict[str, Any], other: str) -> Optional[dict[str, Any]]:
    """The ODE against ``other`` at matched perplexity: both best rates per direction, the
    z-score of each difference, and ``ode_beats`` (:func:`ode_beats`); None if either is absent."""
    beats = ode_beats(trade, other)
    if beats is None:
        return None
    best = trade["best"]
    rates: dict[str, Any] = {m: {d: (best[m][d]["rate"] if best[m][d] else None)
                                 for d in ("positive", "negative")} for m in ("ode", other)}
    rates["z"] = {d: rate_difference_z(best["ode"][d], best[other][d])
                  for d in ("positive", "negative")
                  if best["ode"][d] is not None and best[other][d] is not None}
    return {"value": rates, "met": beats}


def comparisons(trade: dict[str, Any]) -> dict[str, Any]:
    """:func:`comparison` of the ODE with every other method of ``trade``."""
    return {m: comparison(trade, m) for m in trade["best"] if m != "ode"}


def gate_judges(results: dict[str, Any], rates: dict[str, float]) -> dict[str, float]:
    """The classifier judges' rates of ``rates``: the ones the targets are checked on."""
    gates = results.get("judges", {}).get("gates")
    if gates is None:
        gates = [name for name in rates if name not in LEXICON_JUDGES]
    return {name: rates[name] for name in gates if name in rates}


def target_checks(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, each with the measured value and whether it is met.

    The probe targets are per steering data: raw P(good) / P(bad) for a model trained on
    ``cloze`` (the paper's Table 2 replication), the restricted share for one trained on ``sst2``;
    both when ``results["steer_data"]`` is anything else or unknown. The open-ended targets are
    checked on the classifier judges only (:func:`gate_judges`: VADER is reported, not a gate);
    the ODE must beat ActAdd, and DExperts when it ran, at matched perplexity.
    """
    table = results["probe"]
    plus, minus = table["+1"], table["-1"]
    data = results.get("steer_data")
    checks: dict[str, Any] = {}
    t = STEERING_TARGETS
    if data != "sst2":
        checks["cloze_p_good_at_+1>=0.98"] = {"value": plus["p_good"],
                                              "met": plus["p_good"] >= t["cloze_p_good_at_+1"]}
        checks["cloze_p_bad_at_-1>=0.95"] = {"value": minus["p_bad"],
                                             "met": minus["p_bad"] >= t["cloze_p_bad_at_-1"]}
    if data != "cloze":
        checks["sst2_share_at_+1>=0.95"] = {"value": plus["share"],
                                            "met": plus["share"] >= t["sst2_share_at_+1"]}
        checks["sst2_share_at_-1<=0.05"] = {"value": minus["share"],
                                            "met": minus["share"] <= t["sst2_share_at_-1"]}
    checks["sweep_monotone"] = {"value": results["sweep"]["max_violation"]["share"],
                                "met": results["sweep"]["monotone"]}
    oe = results.get("open_ended", {})
    if {"+1", "-1", "0"} <= set(oe):
        pos, neg, ref = oe["+1"], oe["-1"], oe["0"]
        pos_rates = gate_judges(results, pos["positive_rate"])
        neg_rates = gate_judges(results, neg["positive_rate"])
        checks["open_ended_positive_at_+1>=0.90_all_judges"] = {
            "value": pos_rates,
            "met": bool(pos_rates) and min(pos_rates.values()) >= t["open_ended_positive_at_+1"]}
        checks["open_ended_positive_at_-1<=0.10_all_judges"] = {
            "value": neg_rates,
            "met": bool(neg_rates) and max(neg_rates.values()) <= t["open_ended_positive_at_-1"]}
        ratio = max(pos["perplexity"], neg["perplexity"]) / ref["perplexity"]
        checks["perplexity_at_+-1<=1.25x_u0"] = {"value": ratio, "met": ratio <= PPL_BUDGET}
    if "tradeoff" in results:
        for rival in TARGET_RIVALS:
            check = comparison(results["tradeoff"], rival)
            if check is not None:
                checks[f"ode_beats_{rival}_at_matched_perplexity"] = check
    return checks
