"""Every number the papers report and every target steerflow measures itself against.

Paper 1 is *Continuous-Depth Transformers with Learned Control Dynamics* (Jemley, 2026); the
targets come from the project's issues. Studies print these beside their own measurements; change
a number here and every report, table and figure that cites it follows. This module imports
nothing, so any layer of the package may read it.
"""

from __future__ import annotations

from typing import Any

# --------------------------------------------------------------------------------------------
# paper 1, as reported
# --------------------------------------------------------------------------------------------

#: Exp. 1 (Table 1 / Fig. 1): 500 steps on WikiText-2, paper config, GPT-2 tokenizer.
GRADIENT_STABILITY: dict[str, Any] = {
    "steps": 500,
    "config": "paper",
    "baseline": {"params": 30_503_424, "final_loss": 6.471, "grad_norm_mean": 0.521,
                 "grad_norm_std": 0.140, "vanishing_steps": 0, "exploding_steps": 0},
    "hybrid": {"params": 29_781_249, "final_loss": 6.449, "grad_norm_mean": 0.509,
               "grad_norm_std": 0.142, "ode_grad_norm_mean": 0.033, "ode_grad_norm_std": 0.021,
               "alpha_start": 0.1, "alpha_end": 0.065, "vanishing_steps": 0,
               "exploding_steps": 0},
}

#: Exp. 2 (Table 2): next-token (P(" good"), P(" bad")) after "The movie was" per control u.
STEERING_PROBE: dict[str, tuple[float, float]] = {
    "+1": (0.980, 0.002), "0": (0.914, 0.033), "-1": (0.002, 0.881)}

#: Exp. 3: Euler-4 against dopri5, relative divergence ‖H_euler − H_dopri5‖ / ‖H_dopri5‖.
INVARIANCE: dict[str, Any] = {
    "relative_divergence": 0.00068, "train_solver": "euler, 4 steps", "reference": "dopri5"}

#: Solver probing: dopri5 NFE per sign of u, solver agreement, NFE against tolerance, probe τs.
SOLVER_PROBING: dict[str, Any] = {
    "dopri5_nfe_negative_u": 20,
    "dopri5_nfe_positive_u": 14,
    "solver_step_agreement": 0.15,
    "nfe_loose_tolerance": 14,
    "nfe_1000x_tighter": 26,
    "probe_taus": [0.0, 0.5, 0.67, 1.0],
}

#: Exp. 4: inference latency hybrid / baseline (507 vs 520 ms per batch).
LATENCY_RATIO = 0.98

#: Adaptive depth at inference: what paper 1 says (it leaves the question open).
ADAPTIVE_DEPTH: dict[str, Any] = {
    "statement": "adaptive computation (dynamic step counts at inference) is left as an open "
                 "question; the paper reports only whole-solve adaptivity: dopri5 takes ≈20 NFE "
                 "for negative and ≈14 for positive control",
    "train_solver": "euler, 4 steps",
    "dopri5_nfe_negative_u": SOLVER_PROBING["dopri5_nfe_negative_u"],
    "dopri5_nfe_positive_u": SOLVER_PROBING["dopri5_nfe_positive_u"],
}

#: Scale: paper 1 measures one size and leaves scale open; its numbers at that size.
SCALE: dict[str, Any] = {
    "statement": "Paper 1 trains and steers one size (its paper config: 30.5 M parameters for "
                 "the baseline, 29.8 M for the hybrid, 500 steps on WikiText-2) and leaves "
                 "scale (GPT-2 124 M and up) as an open question",
    "config": "paper",
    "params": GRADIENT_STABILITY["baseline"]["params"],
    "params_hybrid": GRADIENT_STABILITY["hybrid"]["params"],
    "gradient_events": 0,
    "alpha_start": GRADIENT_STABILITY["hybrid"]["alpha_start"],
    "alpha_end": GRADIENT_STABILITY["hybrid"]["alpha_end"],
    "final_loss_ratio": GRADIENT_STABILITY["hybrid"]["final_loss"]
    / GRADIENT_STABILITY["baseline"]["final_loss"],
    "relative_divergence": INVARIANCE["relative_divergence"],
    "latency_ratio": LATENCY_RATIO,
}

#: Disentangled control: what paper 1 says (it leaves the question open).
DISENTANGLE: dict[str, Any] = {
    "statement": "u has one steered dimension (sentiment); whether several dimensions of u can "
                 "steer several attributes independently (multi-dimensional disentangled "
                 "control) is left as an open question",
}

#: The headline numbers the end-to-end report prints beside its own.
HEADLINE: dict[str, Any] = {
    "baseline_final_loss": GRADIENT_STABILITY["baseline"]["final_loss"],
    "hybrid_final_loss": GRADIENT_STABILITY["hybrid"]["final_loss"],
    "alpha_end": GRADIENT_STABILITY["hybrid"]["alpha_end"],
    "grad_norm": "0.521±0.140 / 0.509±0.142", "ode_grad_norm": "0.033±0.021",
    "probe": STEERING_PROBE,
    "relative_divergence": INVARIANCE["relative_divergence"], "latency_ratio": LATENCY_RATIO,
}

# --------------------------------------------------------------------------------------------
# steerflow's targets
# --------------------------------------------------------------------------------------------

#: Exp. 1: the hybrid's validation loss may exceed the baseline's by at most this fraction.
VAL_LOSS_TOLERANCE = 0.02

#: Exp. 3: above this relative divergence the hybrid is "a ResNet in disguise" (paper 1).
INVARIANCE_THRESHOLD = 0.01

#: Adaptive depth: at least ``eval_saving`` fewer field evaluations per token than the training
#: solver's fixed grid, with the validation loss within ``val_loss_rel`` (relative) and the
#: steering rates within ``steering_points`` percentage points of the fixed grid's.
ADAPTIVE_DEPTH_TARGETS: dict[str, float] = {
    "eval_saving": 0.30, "val_loss_rel": 0.002, "steering_points": 2.0}

#: Disentangled control: moving u_A from −1 to +1 (the other axis at 0) changes A's rate by at
#: least ``own_effect`` and every other attribute's by at most ``cross_talk`` (its 95 % interval
#: too); the perplexity at each corner of the grid is at most ``corner_ppl_ratio`` × the centre's.
DISENTANGLE_TARGETS: dict[str, float] = {
    "own_effect": 0.6, "cross_talk": 0.05, "corner_ppl_ratio": 1.3}

#: Steering: open-ended perplexity at u = ±1 may be at most this multiple of u = 0's.
PPL_BUDGET = 1.25

#: Steering: the probe and open-ended thresholds (``steerflow eval steering``'s targets).
STEERING_TARGETS: dict[str, float] = {
    "cloze_p_good_at_+1": 0.98,
    "cloze_p_bad_at_-1": 0.95,
    "sst2_share_at_+1": 0.95,
    "sst2_share_at_-1": 0.05,
    "open_ended_positive_at_+1": 0.90,
    "open_ended_positive_at_-1": 0.10,
}

#: Benchmark, hybrid against its own baseline: (comparison, bound) per key; ``latency_ratio``
#: depends on the config. Stated for the paper shapes, 2 threads, the median of quiet runs.
BENCH_TARGETS: dict[str, tuple[str, float]] = {
    "latency_over_flop": ("<=", 1.02),
    "generate_ratio": (">=", 1.05),
    "train_ratio": (">=", 1.05),
    "adjoint_memory_growth": ("<=", 1.25),
    "direct_memory_growth": (">=", 4.0),
    "mfu": (">=", 0.75),
}
#: Benchmark: the latency-ratio bound per config.
BENCH_LATENCY_TARGETS: dict[str, float] = {"paper": 0.95, "gpt2": 0.90}
#: ``bench --peers``: steerflow against transformers' GPT-2 (transformers' time ÷ steerflow's)
#: and single-pass ODE steering against the decoding-time methods, at the preset's shapes.
BENCH_PEER_TARGETS: dict[str, tuple[str, float]] = {
    **{f"peers.{model}.{figure}": (">=", 1.0) for model in ("baseline", "hybrid")
       for figure in ("latency", "generate_b1", "generate_b8", "train")},
    "steer_speed.ode_over_dexperts": (">=", 2.5),
    "steer_speed.ode_over_unsteered": (">=", 0.95),
}
#: ``bench --peers``: seconds from a fresh process (any config: the checkpoint is the demo's).
BENCH_STARTUP_TARGETS: dict[str, tuple[str, float]] = {
    "startup.time_to_first_token_s": ("<=", 1.5),
    "startup.help_s": ("<=", 0.3),
    "startup.import_s": ("<=", 0.3),
}
