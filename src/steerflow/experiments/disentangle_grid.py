"""The control grid of the disentanglement study: rates per cell, own effect and cross-talk.

A *cell* is one control vector u (u ∈ {−1, 0, +1}² for two axes). Every cell samples the same
neutral prompts with the same random numbers (:func:`~steerflow.steer.open_ended.group_seed`), and
each attribute's judge labels every continuation; the attribute's *rate* in the cell is the share
labelled positive (positive sentiment, movie-review register). With e_A the unit vector of axis A,

    own effect of A    = rate_A(+e_A) − rate_A(−e_A),
    cross-talk A → B   = rate_B(+e_A) − rate_B(−e_A),

the rate change of an attribute when only u_A moves from −1 to +1 (the other axes at 0). Both are
means of per-prompt differences (the cells share prompts), so their 95 % intervals are a cluster
bootstrap over prompts of those differences (:func:`~steerflow.steer.intervals.rate_interval`).
Fluency per cell is the perplexity of the continuations given their prompts under an independent
scorer at u = 0 (:class:`~steerflow.steer.open_ended.Scorer`).

A judge can read one attribute into another by itself: the SST-2 sentiment classifier calls more
movie-review windows positive than encyclopedic ones even when the reviews are half positive,
half negative. :func:`judge_offsets` measures that on held-out human text at each pole of A,

    judge offset A → B = rate_B(human text at A's +1 pole) − rate_B(human text at A's −1 pole),

the cross-talk a model would show whose axis A moved its text exactly as far as human text
differs between A's poles and no further; ``cross-talk − offset`` is what the model adds.

A *sampler* maps u to continuations: :func:`model_sampler` (a model's own pass at u) and
:func:`actadd_sampler` (the base with Σ_a u_a · c · v_a added to its residual stream).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from steerflow.errors import InputError
from steerflow.experiments.disentangle_settings import GRID_VALUES

Sampler = Callable[[tuple[float, ...]], list]


def cell_key(u: Sequence[float]) -> str:
    """The JSON key of cell ``u``: ``"+1,-1"``, ``"+0,+0"`` (−0 is written +0)."""
    return ",".join(f"{float(v) + 0.0:+g}" for v in u)


def grid_cells(n_axes: int, values: Sequence[float] = GRID_VALUES) -> list[tuple[float, ...]]:
    """Every u of the grid ``values^n_axes``, in lexicographic order."""
    return [tuple(float(v) for v in u) for u in itertools.product(values, repeat=n_axes)]


def axis_cells(n_axes: int, axis: int) -> list[tuple[float, ...]]:
    """``(−e_axis, +e_axis)``: the two cells an effect of ``axis`` needs."""
    return [tuple(v if a == axis else 0.0 for a in range(n_axes)) for v in (-1.0, 1.0)]


@dataclass
class CellSamples:
    """One cell's continuations judged: the prompt of every sample, each attribute's 0/1 label of
    every sample (``labels[attribute]`` ``(n,)``), the texts and the scorer's perplexity."""

    u: tuple[float, ...]
    prompt_index: np.ndarray
    labels: dict[str, np.ndarray]
    texts: list[str]
    prompts: list[str]
    perplexity: Optional[float] = None

    def rate(self, attribute: str) -> float:
        return float(self.labels[attribute].mean())

    def per_prompt(self, attribute: str) -> tuple[np.ndarray, np.ndarray]:
        """``(prompt ids, mean label of each prompt's samples)``, sorted by prompt id."""
        ids, inverse = np.unique(self.prompt_index, return_inverse=True)
        sums = np.bincount(inverse, weights=self.labels[attribute].astype(float))
        return ids, sums / np.bincount(inverse)


def judge_cell(u: Sequence[float], continuations: Sequence, judges: dict[str, Any],
               scorer=None, gen_tokenizer=None) -> CellSamples:
    """Label ``continuations`` (without their prompts) with every attribute's judge and score
    their perplexity under ``scorer`` (None: no perplexity)."""
    if not continuations:
        raise InputError(f"cell {cell_key(u)}: no continuations to judge")
    texts = [c.text for c in continuations]
    labels = {name: np.asarray(judge.is_positive(texts), dtype=bool)
              for name, judge in judges.items()}
    ppl = scorer.perplexity(continuations, gen_tokenizer) if scorer is not None else None
    return CellSamples(tuple(float(v) for v in u),
                       np.asarray([c.prompt_index for c in continuations]), labels, texts,
                       [c.prompt for c in continuations], ppl)


def measure(sample: Sampler, cells: Sequence[Sequence[float]], judges: dict[str, Any],
            scorer=None, gen_tokenizer=None, progress: bool = False,
            desc: str = "grid") -> dict[str, CellSamples]:
    """Sample and judge every cell: ``{cell key: CellSamples}``."""
    from tqdm.auto import tqdm

    out = {}
    for u in tqdm(cells, desc=desc, disable=not progress, leave=False):
        out[cell_key(u)] = judge_cell(u, sample(tuple(u)), judges, scorer, gen_tokenizer)
    return out


# ----------------------------------------------------------------------------- effects
def rate_change(lo: CellSamples, hi: CellSamples, attribute: str,
                seed: int = 0) -> tuple[float, tuple[float, float]]:
    """``rate(hi) − rate(lo)`` of ``attribute`` as the mean over prompts of the per-prompt
    difference, and its 95 % cluster-bootstrap interval."""
    from steerflow.steer.intervals import rate_interval

    ids_lo, lo_rates = lo.per_prompt(attribute)
    ids_hi, hi_rates = hi.per_prompt(attribute)
    if not np.array_equal(ids_lo, ids_hi):
        raise InputError(f"cells {cell_key(lo.u)} and {cell_key(hi.u)} sampled different prompts")
    diff = hi_rates - lo_rates  # (n_prompts,)
    return float(diff.mean()), rate_interval([[d] for d in diff], seed=seed)


def effects(cells: dict[str, CellSamples], axes: Sequence[str], seed: int = 0) -> dict[str, Any]:
    """``own_effect`` (attribute → value), ``cross_talk`` (``"A->B"`` → value) and their
    intervals, for every axis whose ±e cells were measured (module docstring)."""
    out: dict[str, dict] = {"own_effect": {}, "own_effect_ci": {}, "cross_talk": {},
                            "cross_talk_ci": {}}
    for a, name in enumerate(axes):
        keys = [cell_key(u) for u in axis_cells(len(axes), a)]
        if not all(k in cells for k in keys):
            continue
        lo, hi = (cells[k] for k in keys)
        out["own_effect"][name], out["own_effect_ci"][name] = rate_change(lo, hi, name, seed)
        for other in axes:
            if other != name:
                key = f"{name}->{other}"
                out["cross_talk"][key], out["cross_talk_ci"][key] = rate_change(lo, hi, other, seed)
    return out


def judge_offsets(poles: dict[str, tuple[Sequence[str], Sequence[str]]],
                  judges: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """``judge_offset`` (``"A->B"`` → value) and ``judge_offset_ci`` (module docstring) from
    human text at each attribute's poles (``poles[A] = (texts at +1, texts at −1)``)."""
    from steerflow.steer.intervals import difference_interval

    out: dict[str, dict] = {"judge_offset": {}, "judge_offset_ci": {}}
    for name, (plus, minus) in poles.items():
        for other, judge in judges.items():
            if other == name:
                continue
            hi, lo = (np.asarray(judge.is_positive(list(t)), dtype=float) for t in (plus, minus))
            key = f"{name}->{other}"
            out["judge_offset"][key] = float(hi.mean() - lo.mean())
            out["judge_offset_ci"][key] = difference_interval(hi, lo, seed=seed)
    return out


def beyond_judge(found: dict[str, Any], offsets: dict[str, Any]) -> dict[str, Any]:
    """``cross_talk − judge_offset`` per ``"A->B"`` with an interval: the two estimates come
    from independent samples, so each end's distance from the value adds in quadrature."""
    value, ci = {}, {}
    for key, cross in found["cross_talk"].items():
        if key not in offsets["judge_offset"]:
            continue
        off, (c_lo, c_hi), (o_lo, o_hi) = (offsets["judge_offset"][key],
                                           found["cross_talk_ci"][key],
                                           offsets["judge_offset_ci"][key])
        v = cross - off
        below = float(np.hypot(cross - c_lo, o_hi - off))  # the low end: cross low, offset high
        above = float(np.hypot(c_hi - cross, off - o_lo))
        value[key], ci[key] = v, (v - below, v + above)
    return {"cross_talk_beyond_judge": value, "cross_talk_beyond_judge_ci": ci}


def summarise(cells: dict[str, CellSamples], examples: int = 2, seed: int = 0
              ) -> dict[str, dict[str, Any]]:
    """Per cell: u, each attribute's rate and 95 % interval, the perplexity, the sample count and
    the first ``examples`` continuations with their prompts."""
    from steerflow.steer.intervals import rate_interval

    out = {}
    for key, cell in cells.items():
        ci = {}
        for name in cell.labels:
            _, per_prompt = cell.per_prompt(name)
            ci[name] = rate_interval([[r] for r in per_prompt], seed=seed)
        out[key] = {"u": list(cell.u), "rates": {n: cell.rate(n) for n in cell.labels},
                    "rate_ci": ci, "perplexity": cell.perplexity, "n": len(cell.texts),
                    "examples": [{"prompt": p, "text": t}
                                 for p, t in zip(cell.prompts[:examples], cell.texts[:examples])]}
    return out


def check_targets(found: dict[str, Any], cells: dict[str, dict[str, Any]],
                  targets: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Each target with its measured values and ``met``: own effect ≥ ``targets["own_effect"]``
    on every axis; |cross-talk| and both ends of its interval ≤ ``targets["cross_talk"]`` both
    ways; every corner's perplexity ≤ ``targets["corner_ppl_ratio"]`` × the centre's."""
    own = found["own_effect"]
    worst_cross = max((max(abs(v), *map(abs, found["cross_talk_ci"][k]))
                       for k, v in found["cross_talk"].items()), default=float("nan"))
    out = {"own_effect": {"target": f">= {targets['own_effect']:g} on every axis", "value": own,
                          "met": bool(own) and all(v >= targets["own_effect"]
                                                   for v in own.values())},
           "cross_talk": {"target": f"|value| and its 95 % interval <= {targets['cross_talk']:g}",
                          "value": found["cross_talk"], "worst": worst_cross,
                          "met": bool(found["cross_talk"]) and worst_cross <= targets["cross_talk"]}}
    if found.get("cross_talk_beyond_judge"):
        beyond, ci = found["cross_talk_beyond_judge"], found["cross_talk_beyond_judge_ci"]
        worst = max(max(abs(v), *map(abs, ci[k])) for k, v in beyond.items())
        out["cross_talk_beyond_judge"] = {
            "target": f"|value| and its 95 % interval <= {targets['cross_talk']:g}, after the "
                      f"judge's own offset on human text",
            "value": beyond, "worst": worst, "met": worst <= targets["cross_talk"]}
    centre = next((c for c in cells.values() if not any(c["u"])), None)
    corners = {k: c for k, c in cells.items() if all(abs(v) == 1 for v in c["u"])}
    if centre is not None and corners and centre["perplexity"]:
        ratios = {k: c["perplexity"] / centre["perplexity"] for k, c in corners.items()}
        out["corner_ppl"] = {"target": f"<= {targets['corner_ppl_ratio']:g} x the centre's",
                             "value": ratios, "centre": centre["perplexity"],
                             "met": all(r <= targets["corner_ppl_ratio"] for r in ratios.values())}
    return out


# ----------------------------------------------------------------------------- samplers
def model_sampler(model, prompts: Sequence[str], spec) -> Sampler:
    """u ↦ ``spec.samples`` continuations of every prompt from ``model``'s own pass at u."""
    import torch

    from steerflow.steer.open_ended import sample_continuations
    from steerflow.steer.prompts import encode_prompts

    ids = encode_prompts(model.tokenizer, list(prompts),
                         model.config.block_size - spec.max_new_tokens)

    def sample(u: tuple[float, ...]) -> list:
        control = torch.tensor(u, dtype=torch.float32)  # (c,)
        return sample_continuations(model, model.tokenizer, prompts, control, spec,
                                    prompt_ids=ids)
    return sample


def actadd_sampler(base, prompts: Sequence[str], spec, vectors: Sequence, coef: float) -> Sampler:
    """u ↦ continuations of ``base`` at u = 0 with ``Σ_a u_a · coef · vectors[a]`` added to the
    residual stream at the ODE block's input (ActAdd, Turner et al. 2023; u = 0 adds exact 0)."""
    import torch

    from steerflow.steer.actadd import actadd
    from steerflow.steer.open_ended import sample_continuations
    from steerflow.steer.prompts import encode_prompts

    ids = encode_prompts(base.tokenizer, list(prompts),
                         base.config.block_size - spec.max_new_tokens)

    def sample(u: tuple[float, ...]) -> list:
        if len(u) != len(vectors):
            raise InputError(f"u has {len(u)} axes; there are {len(vectors)} ActAdd vectors")
        vector = sum(float(v) * coef * vec for v, vec in zip(u, vectors))  # (d,)
        return sample_continuations(base, base.tokenizer, prompts, None, spec, prompt_ids=ids,
                                    intervention=actadd(base, torch.as_tensor(vector), 1.0))
    return sample
