"""Setting up a training run: ``build_run(cfg, ctx) -> Run``, everything before the first step.

In order (the order fixes the RNG stream, so a run is a function of its config):

1. check the run folder (a finished or started run is never overwritten without ``--resume``,
   and ``--resume`` refuses changed settings);
2. the tokenizer: the run's own on resume, else the model's or the checkpoint's, else trained
   or loaded as ``cfg.tokenizer`` says (rank 0 first: it fills the shared cache);
3. the model, seeded by ``cfg.seed``: built or loaded; for steering, α rewritten
   (``steer_alpha_value``) and everything but the ODE block frozen;
4. the batch source of the task, the anchor's source, and the objectives
   (:mod:`steerflow.train.objectives`);
5. AdamW (over the model's and the objectives' parameters) and its schedule, the gradient
   monitor, the max-norm constraint on the field (``field_max_norm``);
6. the newest loadable checkpoint restored on ``--resume``, else a fresh run folder;
7. DDP wrapping and ``torch.compile``.
"""

from __future__ import annotations

import dataclasses

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from steerflow.errors import CheckpointError, ConfigError
from steerflow.train import checkpoint as ckpt
from steerflow.train.config import CONTROL_TASKS, TrainConfig
from steerflow.train.distributed import DistContext, barrier, wrap_ddp
from steerflow.train.metrics import METRICS_FILE, GradientMonitor, truncate_metrics
from steerflow.train.objectives import Objective, build_objectives, load_objectives_state
from steerflow.train.optim import FieldMaxNorm, build_field_constraint, build_optimizer
from steerflow.train.tasks import BatchSource, build_batch_source, load_tokenizer

CONFIG_FILE = "train_config.json"


@dataclass
class Run:
    """A training run ready for its first (or next) step."""

    cfg: TrainConfig
    ctx: DistContext
    tokenizer: Any
    model: nn.Module  # the plain model (the one saved and evaluated)
    wrapped: nn.Module  # what the step calls: DDP and/or compiled around ``model``
    source: BatchSource
    anchor: Optional[BatchSource]  # WikiText-2 windows at u = 0 (``steer_anchor``)
    objectives: list[Objective]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    monitor: GradientMonitor
    step: int  # optimizer steps already done
    resumed_from: Optional[int] = None
    nonfinite_steps: int = 0
    alpha_start: Optional[float] = None
    elapsed_before: float = 0.0  # seconds of earlier (re)starts of this run
    field_constraint: Optional[FieldMaxNorm] = None  # applied after every optimizer step


def run_logger(cfg: TrainConfig, ctx: DistContext) -> Callable[[str], None]:
    """A function printing a line on stderr, on rank 0 and unless ``cfg.quiet``."""
    def log(message: str) -> None:
        if ctx.is_main and not cfg.quiet:
            print(message, file=sys.stderr, flush=True)
    return log


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def alpha_of(model: nn.Module) -> Optional[float]:
    """The ODE block's α, or None for a discrete baseline."""
    from steerflow.model.ode_block import alpha_value

    return alpha_value(model.ode) if getattr(model, "ode", None) is not None else None


def freeze_for_steering(model: nn.Module, train_discrete: bool, train_alpha: bool = False,
                        train_final_norm: bool = False, train_head: bool = False,
                        control_only: bool = False) -> None:
    """Freeze embeddings, final LayerNorm and head; train the ODE block (only its zero-initialised
    control paths with ``control_only``: the mlp field's ``W_o`` and adapter, the depth-block
    field's u input),
    + the discrete blocks, + the final LayerNorm, + the head
    (untied first, :func:`untie_head`) as the flags say.

    α stays fixed unless ``train_alpha`` (see ``TrainConfig.steer_alpha``).
    """
    if getattr(model, "ode", None) is None:
        raise ConfigError("tasks 'steer' and 'distill' need a hybrid model with an ODE block; the checkpoint is "
                          "a discrete baseline")
    from steerflow.model.field_base import ControlAdapter, ControlOut

    control_paths = [m for m in model.ode.field.modules()
                     if isinstance(m, (ControlOut, ControlAdapter))]
    if control_only and not control_paths:
        raise ConfigError("control_only trains the field's zero-initialised control paths, which "
                          "this model lacks: add one with control_out or control_adapter (mlp "
                          "field)")
    for p in model.parameters():
        p.requires_grad_(False)
    if train_head:
        untie_head(model)
    trainable = ((control_paths if control_only else [model.ode])
                 + ([model.blocks] if train_discrete else [])
                 + ([model.ln_f] if train_final_norm else [])
                 + ([model.lm_head] if train_head else []))
    for module in trainable:
        for p in module.parameters():
            p.requires_grad_(True)
    model.ode.alpha.requires_grad_(train_alpha and not control_only)


def untie_head(model: nn.Module) -> None:
    """Give the LM head its own copy of the token embeddings (the same model, now untied)."""
    if model.config.tie_weights:
        model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
        model.config = dataclasses.replace(model.config, tie_weights=False)


# ---------------------------------------------------------------------------- the factory
def build_run(cfg: TrainConfig, ctx: DistContext, model: Optional[nn.Module] = None,
              batch_source: Optional[BatchSource] = None) -> Run:
    """Prepare the run ``cfg`` describes (see the module docstring for the order).

    Args:
        model: train this model instead of building one (its ``tokenizer``, if set, is used).
        batch_source: train on these batches instead of the source ``cfg.task`` names.
    """
    log = run_logger(cfg, ctx)
    check_run_dir(cfg)
    data = _DataSource(cfg, log)
    tokenizer = _tokenizer(cfg, ctx, model, data)
    raw = _model(cfg, ctx, model, tokenizer, log)

    def source_of(task_cfg: TrainConfig) -> BatchSource:
        return main_first(ctx, lambda: build_batch_source(
            task_cfg, raw, tokenizer, data.get(), progress=ctx.is_main and not cfg.quiet))

    source = batch_source if batch_source is not None else source_of(cfg)
    anchor = source_of(cfg.lm_task()) if cfg.steer_anchor else None
    objectives = source_objectives(source) + build_objectives(cfg, raw, anchor)
    optimizer, scheduler = build_optimizer(raw, cfg, [p for o in objectives for p in o.parameters()])
    run = Run(cfg=cfg, ctx=ctx, tokenizer=tokenizer, model=raw, wrapped=raw, source=source,
              anchor=anchor, objectives=objectives, optimizer=optimizer, scheduler=scheduler,
              step=0,
              monitor=GradientMonitor(cfg.vanish_floor, cfg.explode_factor, cfg.explode_window),
              alpha_start=alpha_of(raw), field_constraint=build_field_constraint(raw, cfg))
    run.step = _start(run, log)
    run.wrapped = wrap_ddp(raw, ctx)
    if cfg.compile:
        run.wrapped = torch.compile(run.wrapped)
    return run


def source_objectives(source: BatchSource) -> list[Objective]:
    """The objectives a batch source brings for its own rows (``source.objectives()``, e.g. the
    distillation KL of :class:`~steerflow.steer.distill.DistillSource`); none for most."""
    make = getattr(source, "objectives", None)
    return list(make()) if callable(make) else []


def check_run_dir(cfg: TrainConfig) -> None:
    """Refuse to overwrite a run without ``--resume``, and to resume it with other settings."""
    out = cfg.out_dir
    has_run = (out / CONFIG_FILE).is_file() or bool(ckpt.list_checkpoints(out))
    if has_run and not cfg.resume:
        raise ConfigError(f"{out} already holds a training run; pass --resume to continue "
                          f"it or choose another --out")
    if cfg.resume and (out / CONFIG_FILE).is_file():
        saved = TrainConfig.from_json(out / CONFIG_FILE)
        diff = cfg.resume_mismatch(saved)
        if diff:
            changes = ", ".join(f"{k}: {getattr(saved, k)!r} -> {getattr(cfg, k)!r}" for k in diff)
            raise ConfigError(f"--resume with different settings than the run in {out} "
                              f"({changes}); use the original options or another --out")


def main_first(ctx: DistContext, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 first (it fills shared caches), then on the other ranks."""
    if ctx.is_main:
        value = fn()
        barrier(ctx)
        return value
    barrier(ctx)
    return fn()


class _DataSource:
    """The run's data source, resolved on first use (and reported once)."""

    def __init__(self, cfg: TrainConfig, log: Callable[[str], None]) -> None:
        self.cfg, self.log = cfg, log
        self._source = None

    def get(self):
        if self._source is None:
            from steerflow.data import resolve_data_source

            self._source = resolve_data_source(self.cfg.data_dir, require=self.required())
            self.log(f"data: {self._source.describe()}")
        return self._source

    def required(self) -> tuple[str, ...]:
        cfg = self.cfg
        labelled = (cfg.task == "expert" or (cfg.task == "lm" and cfg.lm_u == "conditional")
                    or (cfg.task == "steer" and cfg.steer_data in ("sst2", "sst2-shaped")))
        need = ["sst2"] if labelled else []
        general = (cfg.task in ("lm", "distill") or cfg.steer_anchor
                   or (cfg.task == "steer" and cfg.steer_data == "sst2-shaped"))
        if general:
            need.append("wikitext-2")
            if cfg.tokenizer_spec() == "gpt2" and not (cfg.out_dir / "tokenizer.json").is_file():
                need.append("gpt2-tokenizer")
        return tuple(need)


def _tokenizer(cfg: TrainConfig, ctx: DistContext, model: Optional[nn.Module], data: _DataSource):
    from steerflow.data import Tokenizer

    if cfg.resume and (cfg.out_dir / "tokenizer.json").is_file():
        return Tokenizer.load(cfg.out_dir)
    if model is not None and getattr(model, "tokenizer", None) is not None:
        return model.tokenizer
    if cfg.init_from:
        if Path(cfg.init_from).is_dir():  # a folder that is no checkpoint (pickles only) says so
            from steerflow.model.hub import read_config

            read_config(cfg.init_from)
        if (Path(cfg.init_from) / "tokenizer.json").is_file():
            return Tokenizer.load(cfg.init_from)
        if cfg.task != "lm":
            raise CheckpointError(f"{cfg.init_from}: no tokenizer.json saved with the model")
    return main_first(ctx, lambda: load_tokenizer(cfg.tokenizer_spec(), data.get(),
                                                  cfg.cache_path()))


def reset_alpha(model: nn.Module, value, log: Callable[[str], None]) -> None:
    """``TrainConfig.steer_alpha_value``: move α's scale into the field (same function)."""
    ode = getattr(model, "ode", None)
    if value == "keep" or ode is None:
        return
    if not ode.field.output_layers():
        if value == "auto":
            return  # only a field linear in its output layer takes the reparametrisation
        raise ConfigError(f"steer_alpha_value={value!r} needs a field that is linear in its "
                          f"output layer (mlp); this model's field is {model.config.field!r}")
    target = {"auto": 1.0, "init": model.config.alpha_init}.get(value, value)
    old = ode.reset_alpha_(float(target))
    log(f"steering α: {old:.4g} → {target:.4g} with the field's output layer scaled by "
        f"{old / target:.4g} (the same model)")


def set_control(model: nn.Module, gain: Optional[float], control_out: bool,
                log: Callable[[str], None], adapter: int = 0) -> None:
    """``TrainConfig.control_gain`` / ``control_out`` / ``control_adapter``: add the mlp field's
    zero-initialised control paths, then set the control gain g with ``W_u``, ``W_o`` and the
    adapter's ``B`` rescaled by ``old / g``. All leave the model's function unchanged; they change
    how fast Adam moves u's effect."""
    from steerflow.model.field_base import ControlAdapter
    from steerflow.model.vector_fields import ControlledLinear, ControlOut

    ode = getattr(model, "ode", None)
    if ode is None or (gain is None and not control_out and not adapter):
        return
    if ((control_out and not hasattr(ode.field, "add_control_out"))
            or (adapter and not hasattr(ode.field, "add_control_adapter"))):
        raise ConfigError(f"control_out and control_adapter are paths of the mlp field; this "
                          f"model's field is {model.config.field!r}")
    if control_out and getattr(ode.field, "u_out", None) is None:
        ode.field.add_control_out(model.config.control_dim, model.config.control_gain)
        model.config = dataclasses.replace(model.config, control_out=True)
        log("control path: F + g·W_o u added with W_o = 0 (the same model)")
    if adapter and getattr(ode.field, "u_adapter", None) is None:
        ode.field.add_control_adapter(model.config.control_dim, adapter, model.config.control_gain)
        model.config = dataclasses.replace(model.config, control_adapter=int(adapter))
        log(f"control adapter: F + g·Σ u_a B_a σ(A x) of rank {adapter} added with B = 0 "
            f"(the same model)")
    if gain is None:
        return
    layers = [m for m in ode.field.modules()
              if isinstance(m, (ControlOut, ControlAdapter))
              or (isinstance(m, ControlledLinear) and m.control_dim)]
    if not layers:
        raise ConfigError("control_gain needs u concatenated into the field (injection='concat')")
    old = model.config.control_gain
    for layer in layers:
        layer.set_gain_(gain)
    model.config = dataclasses.replace(model.config, control_gain=float(gain))
    log(f"control gain: {old:.4g} → {gain:.4g} with W_u, W_o, B scaled by {old / gain:.4g} "
        f"(the same model)")


def _model(cfg: TrainConfig, ctx: DistContext, model: Optional[nn.Module], tokenizer,
           log: Callable[[str], None]) -> nn.Module:
    from steerflow.model.gpt import SteerFlowGPT

    torch.manual_seed(cfg.seed)  # same initial weights on every rank and every (re)start
    if model is None and cfg.init_from:
        model = SteerFlowGPT.from_pretrained(cfg.init_from)
    elif model is None:
        model = SteerFlowGPT(cfg.model_config(tokenizer.vocab_size))
    if model.config.vocab_size != tokenizer.vocab_size:
        raise ConfigError(f"the model has vocab_size {model.config.vocab_size} but the tokenizer "
                          f"{tokenizer.name} has {tokenizer.vocab_size} ids")
    if cfg.block_size is not None and cfg.block_size > model.config.block_size:
        raise ConfigError(f"block_size {cfg.block_size} exceeds the model's context "
                          f"{model.config.block_size}")
    model.tokenizer = tokenizer
    if cfg.task in CONTROL_TASKS:
        reset_alpha(model, cfg.steer_alpha_value, log)  # a resumed run then loads its own state
        set_control(model, cfg.control_gain, cfg.control_out, log, cfg.control_adapter)
        freeze_for_steering(model, cfg.train_discrete, cfg.steer_alpha == "trained",
                            cfg.train_final_norm, cfg.train_head, cfg.control_only)
    model.to(ctx.device).train()
    counts = model.param_counts()
    log(f"model: {cfg.model if not cfg.init_from else cfg.init_from} — "
        f"{counts.total:,} params ({count_trainable(model):,} trainable"
        f"{', ODE block ' + format(counts.ode, ',') if model.ode is not None else ''}); "
        f"tokenizer {tokenizer.name} ({tokenizer.vocab_size} ids)")
    return model


# ---------------------------------------------------------------------------- fresh or resumed
def _start(run: Run, log: Callable[[str], None]) -> int:
    """Restore the newest loadable checkpoint on --resume, else prepare a fresh run folder."""
    from steerflow.io import atomic_write_text

    cfg, out = run.cfg, run.cfg.out_dir
    if run.ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.remove_stale_temporaries(out)
    if cfg.resume:
        step = _restore(run, log)
        if step is not None:
            return step
        log(f"--resume: no checkpoint in {ckpt.checkpoint_root(out)} yet; starting from step 0")
    if run.ctx.is_main:
        truncate_metrics(out / METRICS_FILE, 0)
        atomic_write_text(out / CONFIG_FILE, cfg.to_json())
        run.tokenizer.save(out)
    return 0


def _restore(run: Run, log: Callable[[str], None]) -> Optional[int]:
    """Load the newest checkpoint that loads (damaged ones are skipped with a warning)."""
    out = run.cfg.out_dir
    errors = []
    for ref in reversed(ckpt.list_checkpoints(out)):
        try:
            state = ckpt.load_checkpoint(ref.path, run.model, run.optimizer, run.scheduler)
        except CheckpointError as exc:
            errors.append(str(exc))
            log(f"warning: skipping damaged checkpoint {ref.path}: {exc}")
            continue
        try:
            load_objectives_state(run.objectives, state.get("objectives"))
        except CheckpointError as exc:
            errors.append(str(exc))
            log(f"warning: skipping checkpoint {ref.path}: {exc}")
            continue
        run.monitor.load_state_dict(state["monitor"])
        run.nonfinite_steps = int(state["nonfinite_steps"])
        run.alpha_start = state["alpha_start"]
        run.elapsed_before = float(state.get("elapsed_s", 0.0))
        run.resumed_from = ref.step
        if run.ctx.is_main:
            truncate_metrics(out / METRICS_FILE, ref.step)
        log(f"resuming from {ref.path} (step {ref.step} of {run.cfg.steps})")
        return ref.step
    if errors:
        raise CheckpointError(f"no loadable checkpoint in {ckpt.checkpoint_root(out)}: "
                              f"{errors[0]}")
    return None
