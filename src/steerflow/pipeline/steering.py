"""The steering stages of the end-to-end run: train the control, distill a contrast into the
single pass, sample, evaluate (paper 1, Exp. 2, and the steering issue's recipe).

The recipe, stage by stage (each a ``steerflow train`` run the user can repeat by hand):

1. ``steer`` — ``--task steer`` from the pretrained hybrid. With ``steer_data="sst2-shaped"``
   the sequences look like the evaluation (a neutral WikiText-2 opening, then an SST-2 sentence
   at its label's u, loss on the continuation only); ``steer_train_discrete`` also trains the
   discrete blocks, which can then read what u wrote into the residual stream.
2. ``distill`` (when ``distill_steps`` is set) — ``--task distill --teacher guidance``: one pass at
   u learns the stage-1 model's own guidance z(0) + γ·(z(u) − z(−u)) (classifier-free guidance,
   distilled as in Meng et al., CVPR 2023), per token over the vocabulary, on WikiText-2 windows
   and on teacher-sampled continuations of neutral openings, u ~ U[−1, 1].

The last of the two is ``PATHS.steered``, the model every later stage measures.
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
                           steps=s.steer_steps, batch_size=s.steer_batch_size, lr=s.steer_lr,
                           test_batches=s.test_batches,
                           resume=(out / "train_config.json").is_file())
        return _summary_row(train_to_completion(cfg), steer_data=s.steer_data,
                            train_discrete=s.steer_train_discrete)
    return run


def stage_distill(s, env: Environment):
    """Stage 2 of the recipe: the stage-1 model's guidance over u, distilled into one pass."""
    def run(ctx: StageContext) -> dict:
        out = ctx.out_dir / PATHS.steered
        cfg = train_config(s, env, out=str(out), task="distill",
                           init_from=str(ctx.out_dir / PATHS.conditional),
                           distill_teacher="guidance", distill_alpha=s.distill_gamma,
                           distill_on_policy=s.distill_on_policy,
                           train_discrete=s.steer_train_discrete,
                           train_final_norm=s.steer_final_norm, ode_consistency=0.0,
                           steps=s.distill_steps, batch_size=s.distill_batch_size,
                           lr=s.distill_lr, test_batches=s.test_batches,
                           resume=(out / "train_config.json").is_file())
        return _summary_row(train_to_completion(cfg), teacher="guidance",
                            gamma=s.distill_gamma, on_policy=s.distill_on_policy)
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
        models = Models(steered=load(ctx.out_dir, PATHS.steered, env),
                        base=load(ctx.out_dir, PATHS.hybrid, env), baseline=baseline,
                        scorer=baseline, names=names, steer_data=s.steer_data)
        cfg = SteeringEvalConfig(prompts=s.eval_prompts, samples=s.eval_samples,
                                 max_new_tokens=s.eval_new_tokens, sweep_points=s.sweep_points,
                                 open_us=s.open_us, actadd_coefs=s.actadd_coefs,
                                 guidance_gammas=s.guidance_gammas, minilm=s.eval_minilm,
                                 seed=s.seed,
                                 progress=not env.quiet,
                                 judge_cache=str(cache_dir(env) / "judges"))
        results = evaluate_steering(models, data_source(env), cfg)
        write_results(results, ctx.out_dir / PATHS.steering)
        return to_json(results)
    return run
