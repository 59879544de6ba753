"""The training loop: ``train(cfg) -> TrainResult``.

One loop serves language-model pretraining and steering (the task only changes the batch source
and which parameters are trainable). Each optimizer step:

1. takes this rank's rows of the global batch at ``step`` (a pure function of ``(seed, step)``),
   split into ``grad_accum`` micro-batches;
2. back-propagates ``Σ CE / N`` where N counts the non-ignored targets of the *global* batch, so
   the gradient is the same for any number of ranks and micro-batches;
3. measures gradient norms (total, ODE block, per layer) before clipping, classifies gradient
   events, and on a non-finite loss or gradient skips the update or stops (``on_nonfinite``);
4. clips, steps AdamW and the warmup + cosine schedule, logs to ``metrics.jsonl``.

Checkpoints hold everything the next step depends on (weights, AdamW moments, schedule, RNG,
event counters), so ``--resume`` continues bit for bit on CPU.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import signal
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from steerflow.io import json_safe
from steerflow.errors import CheckpointError, ConfigError, DataError, SolverError
from steerflow.steer.objective import discriminative_loss, sequence_log_likelihood, token_nll
from steerflow.train import checkpoint as ckpt
from steerflow.train.config import TrainConfig
from steerflow.train.consistency import capture_for, penalty_term, training_solver
from steerflow.train.distributed import (DistContext, all_reduce_sum, any_rank, barrier, cleanup,
                                         init_distributed, wrap_ddp)
from steerflow.train.metrics import (METRICS_FILE, GradientMonitor, MetricsWriter, grad_norms,
                                     mean_std, read_metrics, truncate_metrics)
from steerflow.train.tasks import BatchSource, build_batch_source, load_tokenizer

logger = logging.getLogger(__name__)

CONFIG_FILE = "train_config.json"
SUMMARY_FILE = "summary.json"
#: ``final_loss`` is the mean training loss of the last this-many steps (paper 1, Table 1)
FINAL_LOSS_WINDOW = 50


class NonFiniteError(SolverError):
    """Training stopped on a NaN/inf loss or gradient (``on_nonfinite="stop"``)."""


@dataclass
class TrainResult:
    """What a run produced. ``model`` is the trained (unwrapped) model, in eval mode."""

    out: Path
    step: int
    steps: int
    params: int
    trainable_params: int
    final_loss: float
    alpha_start: Optional[float]
    alpha_end: Optional[float]
    vanishing_steps: int
    exploding_steps: int
    nonfinite_steps: int
    evals: dict[str, dict[str, float]] = field(default_factory=dict)
    interrupted: bool = False
    resumed_from: Optional[int] = None
    seconds: float = 0.0
    model: Any = field(default=None, repr=False)

    @property
    def val_loss(self) -> Optional[float]:
        return self.evals.get("valid", {}).get("loss")

    @property
    def test_loss(self) -> Optional[float]:
        return self.evals.get("test", {}).get("loss")

    def summary(self) -> dict[str, Any]:
        """The JSON-serialisable part (what ``summary.json`` holds)."""
        data = {k: v for k, v in asdict(self).items() if k != "model"}
        data["out"] = str(self.out)
        data["completed"] = self.step >= self.steps and not self.interrupted
        return data


# ---------------------------------------------------------------------------- pieces
@dataclass
class WarmupCosine:
    """LR multiplier: linear warmup to 1 over ``warmup`` steps, cosine to ``min_ratio`` at ``total``.

    ``m(s) = (s+1)/W`` for ``s < W``; then ``r + (1-r)·(1 + cos(π·p))/2`` with
    ``p = (s-W)/(total-W)`` (nanoGPT's schedule). A plain object so LambdaLR can save its state.
    """

    warmup: int
    total: int
    min_ratio: float

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """nanoGPT-style AdamW groups: decay on weight matrices only; none on biases, LayerNorms,
    α (a 0-d tensor) and embeddings. Frozen parameters are left out."""
    embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding)
                  for p in m.parameters()}
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or id(p) in embeddings else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def freeze_for_steering(model: nn.Module, train_discrete: bool, train_alpha: bool = False,
                        train_final_norm: bool = False) -> None:
    """Freeze embeddings, final LayerNorm and head; train the ODE block (+ discrete blocks,
    + the final LayerNorm with ``train_final_norm``).

    α stays fixed unless ``train_alpha`` (see ``TrainConfig.steer_alpha``).
    """
    if getattr(model, "ode", None) is None:
        raise ConfigError("task 'steer' needs a hybrid model with an ODE block; the checkpoint is "
                          "a discrete baseline")
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = ([model.ode] + ([model.blocks] if train_discrete else [])
                 + ([model.ln_f] if train_final_norm else []))
    for module in trainable:
        for p in module.parameters():
            p.requires_grad_(True)
    model.ode.alpha.requires_grad_(train_alpha)


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class _SignalGuard:
    """Turns the first SIGINT/SIGTERM into a flag (the loop saves and exits); a second one
    interrupts at once. Installed only in the main thread."""

    def __init__(self) -> None:
        self.requested: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_SignalGuard":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _split(t: Optional[torch.Tensor], n: int) -> list[Optional[torch.Tensor]]:
    return [None] * n if t is None else list(torch.tensor_split(t, n, dim=0))


# ---------------------------------------------------------------------------- the trainer
class Trainer:
    """A prepared run: model, data, optimizer and state. :meth:`fit` trains it."""

    def __init__(self, cfg: TrainConfig, ctx: DistContext, model: Optional[nn.Module] = None,
                 batch_source: Optional[BatchSource] = None) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.out = cfg.out_dir
        self.t0 = time.time()
        self._bar = None
        self._check_run_dir()
        self._data_source = None
        self.tokenizer = self._tokenizer(model)
        self.raw = self._model(model)
        self.source = batch_source if batch_source is not None else self._batch_source()
        # WikiText-2 windows at u = 0 for steer_anchor: the LM task's batch source
        self.anchor = self._batch_source(cfg.lm_task()) if cfg.steer_anchor else None
        self._anchor_loss = torch.zeros(())  # this step's mean anchor CE (logged)
        self.optimizer = torch.optim.AdamW(param_groups(self.raw, cfg.weight_decay), lr=cfg.lr,
                                           betas=(cfg.beta1, cfg.beta2))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupCosine(cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio))
        self.monitor = GradientMonitor(cfg.vanish_floor, cfg.explode_factor, cfg.explode_window)
        self.nonfinite_steps = 0
        self.elapsed_before = 0.0
        self.alpha_start = self._alpha()
        self.resumed_from: Optional[int] = None
        self.step = self._start()
        self.model = self._wrap()

    # -------------------------------------------------------------- setup
    def log(self, message: str) -> None:
        if self.ctx.is_main and not self.cfg.quiet:
            if self._bar is not None:
                self._bar.write(message, file=sys.stderr)
            else:
                print(message, file=sys.stderr, flush=True)

    def _check_run_dir(self) -> None:
        cfg = self.cfg
        has_run = (self.out / CONFIG_FILE).is_file() or bool(ckpt.list_checkpoints(self.out))
        if has_run and not cfg.resume:
            raise ConfigError(f"{self.out} already holds a training run; pass --resume to continue "
                              f"it or choose another --out")
        if cfg.resume and (self.out / CONFIG_FILE).is_file():
            saved = TrainConfig.from_json(self.out / CONFIG_FILE)
            diff = cfg.resume_mismatch(saved)
            if diff:
                changes = ", ".join(f"{k}: {getattr(saved, k)!r} -> {getattr(cfg, k)!r}" for k in diff)
                raise ConfigError(f"--resume with different settings than the run in {self.out} "
                                  f"({changes}); use the original options or another --out")

    def data_source(self):
        """The resolved data source (resolved on first use and reported once)."""
        if self._data_source is None:
            from steerflow.data import resolve_data_source

            self._data_source = resolve_data_source(self.cfg.data_dir, require=self._required_data())
            self.log(f"data: {self._data_source.describe()}")
        return self._data_source

    def _required_data(self) -> tuple[str, ...]:
        cfg = self.cfg
        need = ["sst2"] if cfg.task == "steer" and cfg.steer_data == "sst2" else []
        if cfg.task == "lm" or cfg.steer_anchor:
            need.append("wikitext-2")
            if cfg.tokenizer_spec() == "gpt2" and not (self.out / "tokenizer.json").is_file():
                need.append("gpt2-tokenizer")
        return tuple(need)

    def _tokenizer(self, model: Optional[nn.Module]):
        from steerflow.data import Tokenizer

        cfg = self.cfg
        if cfg.resume and (self.out / "tokenizer.json").is_file():
            return Tokenizer.load(self.out)
        if model is not None and getattr(model, "tokenizer", None) is not None:
            return model.tokenizer
        if cfg.init_from:
            if Path(cfg.init_from).is_dir():  # a folder that is no checkpoint (pickles only) says so
                from steerflow.model.hub import read_config

                read_config(cfg.init_from)
            if (Path(cfg.init_from) / "tokenizer.json").is_file():
                return Tokenizer.load(cfg.init_from)
            if cfg.task == "steer":
                raise CheckpointError(f"{cfg.init_from}: no tokenizer.json saved with the model")
        return self._main_first(lambda: load_tokenizer(cfg.tokenizer_spec(), self.data_source(),
                                                       cfg.cache_path()))

    def _main_first(self, fn):
        """Run ``fn`` on rank 0 first (it fills shared caches), then on the other ranks."""
        if self.ctx.is_main:
            value = fn()
            barrier(self.ctx)
            return value
        barrier(self.ctx)
        return fn()

    def _reset_alpha(self, model: nn.Module) -> None:
        """``TrainConfig.steer_alpha_value``: move α's scale into the field (same function)."""
        value = self.cfg.steer_alpha_value
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
        self.log(f"steering α: {old:.4g} → {target:.4g} with the field's output layer scaled by "
                 f"{old / target:.4g} (the same model)")

    def _model(self, model: Optional[nn.Module]) -> nn.Module:
        from steerflow.model.gpt import SteerFlowGPT

        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # same initial weights on every rank and every (re)start
        if model is None and cfg.init_from:
            model = SteerFlowGPT.from_pretrained(cfg.init_from)
        elif model is None:
            model = SteerFlowGPT(cfg.model_config(self.tokenizer.vocab_size))
        if model.config.vocab_size != self.tokenizer.vocab_size:
            raise ConfigError(f"the model has vocab_size {model.config.vocab_size} but the tokenizer "
                              f"{self.tokenizer.name} has {self.tokenizer.vocab_size} ids")
        if cfg.block_size is not None and cfg.block_size > model.config.block_size:
            raise ConfigError(f"block_size {cfg.block_size} exceeds the model's context "
                              f"{model.config.block_size}")
        model.tokenizer = self.tokenizer
        if cfg.task == "steer":
            self._reset_alpha(model)  # a resumed run overwrites the weights with its own state
            freeze_for_steering(model, cfg.train_discrete, cfg.steer_alpha == "trained",
                                cfg.train_final_norm)
        model.to(self.ctx.device).train()
        counts = model.param_counts()
        self.log(f"model: {cfg.model if not cfg.init_from else cfg.init_from} — "
                 f"{counts.total:,} params ({count_trainable(model):,} trainable"
                 f"{', ODE block ' + format(counts.ode, ',') if model.ode is not None else ''}); "
                 f"tokenizer {self.tokenizer.name} ({self.tokenizer.vocab_size} ids)")
        return model

    def _batch_source(self, cfg: Optional[TrainConfig] = None) -> BatchSource:
        """The batch source of ``cfg.task`` (default: this run's config)."""
        return self._main_first(lambda: build_batch_source(
            cfg or self.cfg, self.raw, self.tokenizer, self.data_source(),
            progress=self.ctx.is_main and not self.cfg.quiet))

    def _alpha(self) -> Optional[float]:
        from steerflow.model.ode_block import alpha_value

        return alpha_value(self.raw.ode) if getattr(self.raw, "ode", None) is not None else None

    def _start(self) -> int:
        """Restore the newest loadable checkpoint on --resume, else prepare a fresh run folder."""
        from steerflow.io import atomic_write_text

        if self.ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            ckpt.remove_stale_temporaries(self.out)
        if self.cfg.resume:
            step = self._restore()
            if step is not None:
                return step
            self.log(f"--resume: no checkpoint in {ckpt.checkpoint_root(self.out)} yet; "
                     f"starting from step 0")
        if self.ctx.is_main:
            truncate_metrics(self.out / METRICS_FILE, 0)
            atomic_write_text(self.out / CONFIG_FILE, self.cfg.to_json())
            self.tokenizer.save(self.out)
        return 0

    def _restore(self) -> Optional[int]:
        refs = ckpt.list_checkpoints(self.out)
        errors = []
        for ref in reversed(refs):
            try:
                trainer = ckpt.load_checkpoint(ref.path, self.raw, self.optimizer, self.scheduler)
            except CheckpointError as exc:
                errors.append(str(exc))
                self.log(f"warning: skipping damaged checkpoint {ref.path}: {exc}")
                continue
            self.monitor.load_state_dict(trainer["monitor"])
            self.nonfinite_steps = int(trainer["nonfinite_steps"])
            self.alpha_start = trainer["alpha_start"]
            self.elapsed_before = float(trainer.get("elapsed_s", 0.0))
            self.resumed_from = ref.step
            if self.ctx.is_main:
                truncate_metrics(self.out / METRICS_FILE, ref.step)
            self.log(f"resuming from {ref.path} (step {ref.step} of {self.cfg.steps})")
            return ref.step
        if errors:
            raise CheckpointError(f"no loadable checkpoint in {ckpt.checkpoint_root(self.out)}: "
                                  f"{errors[0]}")
        return None

    def _wrap(self) -> nn.Module:
        model = wrap_ddp(self.raw, self.ctx)
        if self.cfg.compile:
            model = torch.compile(model)
        return model

    # -------------------------------------------------------------- one step
    def _autocast(self):
        return torch.autocast(self.ctx.device.type, dtype=torch.bfloat16,
                              enabled=self.cfg.dtype == "bfloat16")

    def _backward_batch(self, step: int) -> tuple[float, int, Optional[str]]:
        """Forward/backward all micro-batches of ``step``; return (global loss, tokens, failure)."""
        cfg, ctx = self.cfg, self.ctx
        x, y, u = self.source.train_batch(step, cfg.batch_size, ctx.rank, ctx.world_size)
        n_global = int(all_reduce_sum(torch.tensor([int((y != -1).sum())], device=ctx.device), ctx))
        if n_global == 0:
            raise DataError(f"the batch at step {step + 1} has no targets (all ignored)")
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=ctx.device)
        self._anchor_loss = torch.zeros((), device=ctx.device)
        xa = ya = None
        if self.anchor is not None:
            xa, ya, _ = self.anchor.train_batch(step, cfg.batch_size, ctx.rank, ctx.world_size)
        parts = list(zip(_split(x, cfg.grad_accum), _split(y, cfg.grad_accum), _split(u, cfg.grad_accum),
                         _split(xa, cfg.grad_accum), _split(ya, cfg.grad_accum)))
        for i, (xm, ym, um, xam, yam) in enumerate(parts):
            sync = i == len(parts) - 1 or not ctx.enabled
            with (contextlib.nullcontext() if sync else self.model.no_sync()):
                try:
                    part = self._micro_step(xm, ym, um, n_global, step, anchor=(xam, yam))
                except SolverError as exc:
                    if ctx.enabled:
                        raise
                    return math.nan, x.numel(), f"ODE solve failed: {exc}"
            loss_sum += part
        total = all_reduce_sum(loss_sum.reshape(1), ctx)
        return float(total) / n_global, x.numel() * ctx.world_size, None

    def _micro_step(self, x, y, u, n_global: int, step: int = 0,
                    anchor: tuple[Optional[torch.Tensor], Optional[torch.Tensor]] = (None, None)
                    ) -> torch.Tensor:
        device = self.ctx.device
        x, y = x.to(device), y.to(device)
        u = None if u is None else u.to(device)
        solver = training_solver(self.raw, self.cfg, step)  # None: the model's train_solver
        w_disc = self.cfg.steer_discriminative if self.cfg.task == "steer" else 0.0
        # one forward pass for every row (DDP allows one forward per backward): the batch at u,
        # its contrast at −u (GeDi) and the anchor windows at u = 0
        xs, us = [x], [u]
        if w_disc:
            xs.append(x)
            us.append(-u)
        xa, ya = anchor
        if xa is not None:
            xa, ya = xa.to(device), ya.to(device)
            xs.append(xa)
            us.append(None if u is None else u.new_zeros(xa.shape[0], u.shape[1]))
        if len(xs) == 1:
            x_in, u_in = x, u
        else:  # right-pad to one length; padded positions have no targets and, causal, no effect
            width = max(t.shape[1] for t in xs)
            x_in = torch.cat([F.pad(t, (0, width - t.shape[1]), value=0) for t in xs])
            u_in = None if u is None else torch.cat(us)
        with self._autocast(), capture_for(self.raw, self.cfg) as capture:
            logits, _ = self.model(x_in, u_in, solver=solver)  # (rows, T', V)
        logits = logits.split([t.shape[0] for t in xs])
        logits = [part[:, :t.shape[1]] for part, t in zip(logits, xs)]
        logits_contrast = logits[1] if w_disc else None
        logits_anchor = logits[-1] if xa is not None else None
        logits = logits[0]
        # Σ CE over this micro-batch's targets; × W / N so DDP's mean over W ranks gives Σ/N
        nll = token_nll(logits, y)  # (b, T); GeDi's term reuses it
        loss_sum = nll.sum()
        share = x.shape[0] * self.ctx.world_size / self.cfg.batch_size
        with self._autocast():
            extra = penalty_term(self.raw, self.cfg, capture, share, solver)  # 0 unless ode_consistency
        objective = loss_sum * (self.ctx.world_size / n_global)
        if w_disc:
            disc = discriminative_loss(sequence_log_likelihood(logits, y, nll),
                                       sequence_log_likelihood(logits_contrast, y))  # (b,)
            # GeDi's mix; the mean over the micro-batch × share gives the global mean under DDP
            objective = (1 - w_disc) * objective + w_disc * share * disc.mean()
        if logits_anchor is not None:
            anchor_ce = F.cross_entropy(logits_anchor.float().flatten(0, 1), ya.flatten(),
                                        ignore_index=-1)  # mean over this micro-batch's windows
            objective = objective + self.cfg.steer_anchor * share * anchor_ce
            self._anchor_loss += anchor_ce.detach() * share  # this rank's mean; no sync here
        (objective + extra).backward()
        return loss_sum.detach()

    def train_step(self, step: int) -> dict[str, Any]:
        """One optimizer step at 0-based ``step``; returns its metrics record."""
        t0, cpu0 = time.perf_counter(), time.process_time()
        lr = self.optimizer.param_groups[0]["lr"]
        loss, tokens, failure = self._backward_batch(step)
        norms = grad_norms(self.raw)
        event = self.monitor.observe(norms.total if failure is None else math.nan, norms.ode)
        nonfinite = failure is not None or not (math.isfinite(loss) and math.isfinite(norms.total))
        if nonfinite:
            self._on_nonfinite(step, loss, norms.total, failure)
        else:
            if self.cfg.grad_clip > 0:
                params = [p for p in self.raw.parameters() if p.grad is not None]
                torch.nn.utils.clip_grads_with_norm_(params, self.cfg.grad_clip,
                                                     torch.tensor(norms.total))
            self.optimizer.step()
        with warnings.catch_warnings():  # a skipped first step would warn about the call order
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        stats = self.raw.ode.last_stats if getattr(self.raw, "ode", None) is not None else None
        dt = time.perf_counter() - t0
        return {"type": "train", "step": step + 1, "loss": loss, "lr": lr,
                "grad_norm": norms.total, "ode_grad_norm": norms.ode,
                "layer_grad_norms": norms.per_layer, "alpha": self._alpha(),
                "nfe_forward": stats.nfe_forward if stats else None,
                "nfe_backward": stats.nfe_backward if stats else None,
                "tokens_per_s": tokens / dt if dt > 0 else None, "time_s": dt,
                "cpu_s": time.process_time() - cpu0,
                "vanishing": event.vanishing, "exploding": event.exploding,
                "skipped": nonfinite, "event": event.reason or None,
                **({"anchor_loss": float(self._anchor_loss)} if self.anchor is not None else {})}

    def _on_nonfinite(self, step: int, loss: float, norm: float, failure: Optional[str]) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        what = failure or f"non-finite {'loss' if not math.isfinite(loss) else 'gradient'}"
        if self.cfg.on_nonfinite == "stop":
            last = ckpt.list_checkpoints(self.out)
            where = f"the last checkpoint is {last[-1].path}" if last else "no checkpoint was written"
            raise NonFiniteError(
                f"training stopped at step {step + 1}: {what} (loss={loss:.4g}, grad norm="
                f"{norm:.4g}); {where}. Lower --lr or use --on-nonfinite skip")
        self.nonfinite_steps += 1
        self.log(f"step {step + 1}: {what} (loss={loss:.4g}, grad norm={norm:.4g}); update skipped")

    # -------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, split: str, max_batches: Optional[int]) -> dict[str, float]:
        """Mean next-token loss over ``split`` (up to ``max_batches`` batches), u from the source."""
        was_training = self.raw.training
        self.raw.eval()
        total, count = 0.0, 0
        batches: Iterator = self.source.eval_batches(split, self.cfg.eval_batch_size)
        try:
            for x, y, u in itertools.islice(batches, max_batches):
                with self._autocast():
                    logits, _ = self.raw(x.to(self.ctx.device),
                                         None if u is None else u.to(self.ctx.device))
                y = y.to(self.ctx.device)
                total += float(F.cross_entropy(logits.float().flatten(0, 1), y.flatten(),
                                               ignore_index=-1, reduction="sum"))
                count += int((y != -1).sum())
        finally:
            self.raw.train(was_training)
        loss = total / count if count else math.nan
        result = {"loss": loss, "ppl": math.exp(loss) if loss < 700 else math.inf, "tokens": count}
        tpw = (getattr(self.source, "tokens_per_word", None) or {}).get(split)
        if tpw:
            # word ppl = exp(total NLL / words) = exp(loss · tokens / words)
            result["word_ppl"] = math.exp(loss * tpw) if loss * tpw < 700 else math.inf
        return result

    def eval_splits(self) -> tuple[str, ...]:
        return tuple(getattr(self.source, "eval_splits", ("valid",)))

    # -------------------------------------------------------------- checkpoints
    def trainer_state(self) -> dict[str, Any]:
        return {"monitor": self.monitor.state_dict(), "nonfinite_steps": self.nonfinite_steps,
                "alpha_start": self.alpha_start, "task": self.cfg.task,
                "elapsed_s": self.elapsed()}

    def elapsed(self) -> float:
        """Wall-clock seconds of this run, summed over every (re)start."""
        return self.elapsed_before + time.time() - self.t0

    def save(self, done: int) -> None:
        if self.ctx.is_main:
            path = ckpt.save_checkpoint(self.out, done, self.raw, self.optimizer, self.scheduler,
                                        self.trainer_state(), self.cfg.keep_checkpoints)
            self.last_saved = done
            logger.info("checkpoint %s", path)
        barrier(self.ctx)

    # -------------------------------------------------------------- the loop
    def fit(self) -> TrainResult:
        """Train from the current step to ``cfg.steps`` (or a signal), then save and evaluate."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        self.last_saved = self.step if self.resumed_from is not None else None
        interrupted = False
        writer = MetricsWriter(self.out / METRICS_FILE, enabled=self.ctx.is_main)
        self._bar = tqdm(total=cfg.steps, initial=self.step, unit="step", file=sys.stderr,
                         desc=f"train {cfg.task}:{cfg.model}", dynamic_ncols=True,
                         disable=cfg.quiet or not self.ctx.is_main)
        try:
            with writer, _SignalGuard() as guard:
                while self.step < cfg.steps:
                    record = self.train_step(self.step)
                    self.step += 1
                    writer.write(record)
                    self._progress(record)
                    self._periodic(writer)
                    if any_rank(guard.requested is not None, self.ctx):
                        interrupted = True
                        self.log(f"signal received: saving step {self.step} and stopping "
                                 f"(rerun with --resume to continue)")
                        break
                if self.last_saved != self.step:
                    self.save(self.step)
                return self._finish(writer, interrupted)
        finally:
            self._bar.close()
            self._bar = None

    def _progress(self, record: dict[str, Any]) -> None:
        if self._bar is None or self._bar.disable:
            return
        post = {"loss": f"{record['loss']:.3f}", "lr": f"{record['lr']:.2e}"}
        if record["alpha"] is not None:
            post["α"] = f"{record['alpha']:.4f}"
        if record["tokens_per_s"]:
            post["tok/s"] = f"{record['tokens_per_s']:.0f}"
        self._bar.set_postfix(post, refresh=False)
        self._bar.update(1)

    def _periodic(self, writer: MetricsWriter) -> None:
        cfg = self.cfg
        if self.ctx.is_main and (self.step % cfg.eval_interval == 0 or self.step == cfg.steps):
            split = self.eval_splits()[0]
            result = self.evaluate(split, cfg.eval_batches)
            writer.write({"type": "eval", "step": self.step, "split": split, **result})
            self.log(f"step {self.step}: {split} loss {result['loss']:.4f} (ppl {result['ppl']:.1f})")
        if self.step % cfg.save_every == 0 and self.step < cfg.steps:
            self.save(self.step)

    def _finish(self, writer: MetricsWriter, interrupted: bool) -> TrainResult:
        evals: dict[str, dict[str, float]] = {}
        completed = self.step >= self.cfg.steps and not interrupted
        if self.ctx.is_main and completed:
            self.raw.save_pretrained(self.out, tokenizer=self.tokenizer)
            for split in self.eval_splits():
                evals[split] = self.evaluate(split, self.cfg.test_batches)
                writer.write({"type": "final", "step": self.step, "split": split, **evals[split]})
        result = self._result(evals, interrupted)
        if self.ctx.is_main:
            import json

            from steerflow.io import atomic_write_text

            atomic_write_text(self.out / SUMMARY_FILE,
                              json.dumps(json_safe(result.summary()), indent=2) + "\n")
            self.log(_summary_line(result))
        barrier(self.ctx)
        self.raw.eval()
        return result

    def _result(self, evals: dict[str, dict[str, float]], interrupted: bool) -> TrainResult:
        losses = [r["loss"] for r in read_metrics(self.out / METRICS_FILE, "train")][-FINAL_LOSS_WINDOW:]
        final_loss = mean_std(losses)[0] if self.ctx.is_main else math.nan
        return TrainResult(
            out=self.out, step=self.step, steps=self.cfg.steps, params=self.raw.num_params(),
            trainable_params=count_trainable(self.raw), final_loss=final_loss,
            alpha_start=self.alpha_start, alpha_end=self._alpha(),
            vanishing_steps=self.monitor.vanishing_steps,
            exploding_steps=self.monitor.exploding_steps, nonfinite_steps=self.nonfinite_steps,
            evals=evals, interrupted=interrupted, resumed_from=self.resumed_from,
            seconds=self.elapsed(), model=self.raw)



def _summary_line(result: TrainResult) -> str:
    state = "interrupted" if result.interrupted else "done"
    parts = [f"{state}: step {result.step}/{result.steps}", f"final loss {result.final_loss:.4f}"]
    for split, ev in result.evals.items():
        text = f"{split} loss {ev['loss']:.4f} ppl {ev['ppl']:.1f}"
        if "word_ppl" in ev:
            text += f" (word ppl {ev['word_ppl']:.1f})"
        parts.append(text)
    if result.alpha_end is not None:
        parts.append(f"α {result.alpha_start:.4f} → {result.alpha_end:.4f}")
    parts.append(f"vanishing {result.vanishing_steps}, exploding {result.exploding_steps}, "
                 f"skipped {result.nonfinite_steps}")
    return "; ".join(parts) + f" — {result.out}"


# ---------------------------------------------------------------------------- entry point
def train(cfg: TrainConfig, *, model: Optional[nn.Module] = None,
          batch_source: Optional[BatchSource] = None) -> TrainResult:
    """Train as ``cfg`` says and return the result (the CLI ``steerflow train`` calls this).

    Args:
        cfg: the run's options; ``cfg.out`` receives the final model, ``metrics.jsonl``,
            ``train_config.json``, ``summary.json`` and ``checkpoints/``.
        model: train this model instead of building one from ``cfg`` (its ``tokenizer``
            attribute, if set, is the run's tokenizer).
        batch_source: train on these batches instead of the source ``cfg.task`` names.

    Under ``torchrun`` each process calls this and they train one model with DDP.
    """
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"train() expects a TrainConfig, got {type(cfg).__name__}")
    ctx = init_distributed(cfg.device)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return Trainer(cfg, ctx, model, batch_source).fit()
    finally:
        torch.set_num_threads(threads)
        cleanup(ctx)
