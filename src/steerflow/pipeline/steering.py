"""The steering stages of the end-to-end run: train the control, distill a contrast into the
single pass, sample, evaluate (paper 1, Exp. 2, and the steering issue's recipe).

The recipe, stage by stage (each a ``steerflow train`` run the user can repeat by hand):

1. ``steer`` — ``--task steer`` from the pretrained hybrid. With ``steer_data="sst2-shaped"``
   the sequences look like the evaluation (a neutral WikiText-2 opening, then an SST-2 sentence
   at its label's u, loss on the continuation only); ``steer_train_discrete`` also trains the
   discrete blocks, which can then read what u wrote into the residual stream.
2. ``experts`` (when ``expert_steps`` is set) — ``--task expert`` twice: the base LM fine-tuned on
   positive and on negative SST-2 sentences, DExperts' expert and anti-expert (Liu et al. 2021).
3. ``distill`` (when ``distill_steps`` is set) — ``--task distill``: one pass at u learns a contrast
   teacher, per token over the vocabulary, on WikiText-2 windows and on teacher-sampled
   continuations of neutral openings, u ~ U[−1, 1]: DExperts z_base + u·α·(z_pos − z_neg) when the
   experts were trained, else the stage-1 model's own guidance z(0) + γ·(z(u) − z(−u))
   (classifier-free guidance, distilled as in Meng et al., CVPR 2023). ``control_only`` and
   ``train_head`` train just the field's direct control path and an untied LM head: a hidden
   state moves the logits only within span(W_head), where little of the contrast lies on a small
   LM, so the head learns to read the direction u writes (``TrainConfig.train_head``).

Each stage is optional (its ``*_steps`` of None skips it); the last that runs writes
``PATHS.steered``, the model every later stage measures.
"""

from __future__ import annotations

from typing import Any

from steerflow.pipeline.environment import (Environment, cache_dir, data_source, load,
                                            train_config, train_to_completion)
from steerflow.pipeline.paths import PATHS
from steerflow.pipeline.stages import StageContext

#: the u values the report shows sample generations for
SAMPLE_US = (-1.0, 0.0, 1.0)
SAMPLE_PROMPTS = ("The movie was", "The film", "In the end , the story")


def steer_output(s) -> str:
    """Where the ``steer`` stage writes: the final model, or the distillation's starting point."""
    return PATHS.conditional if s.distill_steps else PATHS.steered


def _summary_row(summary: dict, **extra: Any) -> dict:
    return {**extra, "steps": summary["step"], "trainable_params": summary.get("trainable_params"),
            "final_loss": summary["final_loss"], "alpha_start": summary.get("alpha_start"),
            "alpha_end": summary.get("alpha_end"), "seconds": summary.get("seconds"),
            "valid_loss": summary.get("evals", {}).get("valid", {}).get("loss")}


def stage_steer(s, env: Environment):
    """Stage 1 of the recipe (module docstring)."""
    def run(ctx: StageContext) -> dict:
        out = ctx.out_dir / steer_output(s)
        cfg = train_config(s, env, out=str(out), task="steer",
                           init_from=str(ctx.out_dir / PATHS.hybrid), steer_data=s.steer_data,
                           steer_discriminative=s.steer_discriminative,
                           ode_consistency=s.steer_consistency,
                           train_discrete=s.steer_train_discrete,
                           train_final_norm=s.steer_final_norm, steer_anchor=s.steer_anchor,
                           control_gain=s.control_gain, control_out=s.control_out,
                           control_adapter=s.control_adapter, control_only=s.control_only,
                           train_head=s.train_head, steps=s.steer_steps,
                           batch_size=s.steer_batch_size, lr=s.steer_lr,
                           test_batches=s.test_batches,
                           resume=(out / "train_config.json").is_file())
        return _summary_row(train_to_completion(cfg), steer_data=s.steer_data,
                            train_discrete=s.steer_train_discrete)
    return run


def stage_experts(s, env: Environment):
    """Stage 2 of the recipe: DExperts' expert and anti-expert from the base LM."""
    def run(ctx: StageContext) -> dict:
        rows = {}
        for label, rel in ((1, PATHS.expert_positive), (-1, PATHS.expert_negative)):
            out = ctx.out_dir / rel
            cfg = train_config(s, env, out=str(out), task="expert", expert_label=label,
                               init_from=str(ctx.out_dir / PATHS.hybrid), steps=s.expert_steps,
                               batch_size=s.expert_batch_size or s.steer_batch_size,
                               lr=s.expert_lr,
                               test_batches=s.test_batches,
                               resume=(out / "train_config.json").is_file())
            rows["positive" if label > 0 else "negative"] = _summary_row(train_to_completion(cfg))
        return rows
    return run


def _teacher(s, run_dir) -> str:
    if s.expert_steps:
        return (f"dexperts:{run_dir / PATHS.expert_positive},"
                f"{run_dir / PATHS.expert_negative}")
    return "guidance"


def stage_distill(s, env: Environment):
    """Stage 3 of the recipe: a contrast of two conditionals distilled into one pass at u."""
    def run(ctx: StageContext) -> dict:
        out = ctx.out_dir / PATHS.steered
        teacher = _teacher(s, ctx.out_dir)
        cfg = train_config(s, env, out=str(out), task="distill",
                           init_from=str(ctx.out_dir / (PATHS.conditional if s.steer_steps
                                                        else PATHS.hybrid)),
                           distill_teacher=teacher,
                           distill_alpha=s.distill_gamma, distill_top_p=s.distill_top_p,
                           control_gain=s.control_gain, control_out=s.control_out,
                           control_adapter=s.control_adapter, control_only=s.control_only,
                           train_head=s.train_head, distill_on_policy=s.distill_on_policy,
                           train_discrete=s.steer_train_discrete,
                           train_final_norm=s.steer_final_norm, ode_consistency=0.0,
                           steps=s.distill_steps, batch_size=s.distill_batch_size,
                           block_size=s.distill_block_size, lr=s.distill_lr,
                           weight_decay=0.0,  # decay would pull an untied head towards 0
                           test_batches=s.test_batches,
                           resume=(out / "train_config.json").is_file())
        return _summary_row(train_to_completion(cfg), teacher=teacher, gamma=s.distill_gamma,
                            on_policy=s.distill_on_policy)
    return run


def stage_samples(s, env: Environment):
    """The same prompts and seed at u = −1, 0, +1: the effect of u at a glance."""
    def run(ctx: StageContext) -> dict:
        import torch

        model = load(ctx.out_dir, PATHS.steered, env)
        tok = model.tokenizer
        rows = []
        for prompt in SAMPLE_PROMPTS:
            idx = torch.tensor([tok.encode(prompt)])
            for u in SAMPLE_US:
                out = model.generate(idx, u=u, max_new_tokens=s.eval_new_tokens, top_p=0.9,
                                     seed=s.seed)
                rows.append({"prompt": prompt, "u": u,
                             "text": tok.decode(out[0, idx.shape[1]:].tolist())})
        return {"samples": rows}
    return run


def stage_steering_eval(s, env: Environment):
    """``steerflow eval steering`` on the steered model, the base LM and the discrete baseline
    (a second fluency scorer that never generates)."""
    def run(ctx: StageContext) -> dict:
        from steerflow.steer.evaluate import Models, evaluate_steering
        from steerflow.steer.report import to_json, write_results
        from steerflow.steer.settings import SteeringEvalConfig

        names = {"steered": PATHS.steered, "base": PATHS.hybrid, "baseline": PATHS.baseline,
                 "scorer": PATHS.baseline}
        baseline = load(ctx.out_dir, PATHS.baseline, env)
        base = load(ctx.out_dir, PATHS.hybrid, env)
        models = Models(steered=load(ctx.out_dir, PATHS.steered, env), base=base,
                        baseline=baseline, scorer=baseline, names=names, steer_data=s.steer_data)
        if s.expert_steps:
            from steerflow.steer.evaluate import load_dexperts

            experts = (ctx.out_dir / PATHS.expert_positive, ctx.out_dir / PATHS.expert_negative)
            models.dexperts = load_dexperts(base, names["base"], experts)
            names["dexperts_positive"], names["dexperts_negative"] = map(str, experts)
        cfg = SteeringEvalConfig(prompts=s.eval_prompts, samples=s.eval_samples,
                                 max_new_tokens=s.eval_new_tokens, sweep_points=s.sweep_points,
                                 open_us=s.open_us, actadd_coefs=s.actadd_coefs,
                                 guidance_gammas=s.guidance_gammas, minilm=s.eval_minilm,
                                 dexperts_alphas=s.dexperts_alphas, seed=s.seed,
                                 progress=not env.quiet,
                                 judge_cache=str(cache_dir(env) / "judges"))
        results = evaluate_steering(models, data_source(env), cfg)
        write_results(results, ctx.out_dir / PATHS.steering)
        return to_json(results)
    return run
