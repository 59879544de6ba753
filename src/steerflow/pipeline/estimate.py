"""A duration estimate for a run, from one timed training step on this machine."""

from __future__ import annotations

import time


def eval_fraction(config: str) -> float:
    """Seconds of the other stages per second of LM and steering training, from the measured
    stage durations (:data:`~steerflow.pipeline.demo.STAGE_SECONDS`)."""
    from steerflow.pipeline.demo import stage_seconds

    seconds = stage_seconds(config)
    trained = sum(seconds.get(name, 0.0) for name in ("lm", "steer", "experts", "distill"))
    return (sum(seconds.values()) - trained) / trained


def estimate_seconds(settings, env) -> dict:
    """Time two training steps of the hybrid at the run's shapes and extrapolate to every stage."""
    import torch

    from steerflow.config import ModelConfig
    from steerflow.model.gpt import SteerFlowGPT
    from steerflow.train.config import TRAIN_DEFAULTS

    defaults = TRAIN_DEFAULTS.get(settings.config, TRAIN_DEFAULTS["small"])
    device = "cuda" if env.device == "auto" and torch.cuda.is_available() else (
        "cpu" if env.device == "auto" else env.device)
    config = ModelConfig.from_name(settings.config)
    batch = settings.lm_batch_size or defaults["batch_size"]
    model = SteerFlowGPT(config).to(device).train()
    idx = torch.randint(0, config.vocab_size, (batch, config.block_size), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for _ in range(3):  # the first step warms up allocators and kernels
        start = time.perf_counter()
        _, loss = model(idx, targets=idx)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    step = min(times[1:])
    lm_steps = settings.lm_steps or defaults["steps"]
    # steering-recipe steps in LM-step units: a distillation step runs the three teacher passes
    # and the on-policy sampling beside the student's (about 3 LM steps of its batch)
    recipe = ((settings.steer_steps or 0) + 2 * (settings.expert_steps or 0)) \
        * settings.steer_batch_size / batch \
        + 3 * (settings.distill_steps or 0) * settings.distill_batch_size / batch
    train_s = step * (2 * lm_steps + recipe)
    total = train_s * (1 + eval_fraction(settings.config))
    return {"device": device, "step_s": step, "train_s": train_s, "total_s": total}
