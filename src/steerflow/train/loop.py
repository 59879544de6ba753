"""The training loop: ``train(cfg) -> TrainResult``.

One loop serves language-model pretraining and steering (the task only changes the batch source
and which parameters are trainable). Each optimizer step:

1. takes this rank's rows of the global batch at ``step`` (a pure function of ``(seed, step)``),
   split into ``grad_accum`` micro-batches;
2. back-propagates ``Σ CE / N`` where N counts the non-ignored targets of the *global* batch, so
   the gradient is the same for any number of ranks and micro-batches;
3. measures gradient norms (total, ODE block, per layer) before clipping, classifies gradient
   events, and on a non-finite loss or gradient skips the update or stops (``on_nonfinite``);
4. clips, steps AdamW and the warmup + cosine schedule, applies the field's max-norm
   constraint (``field_max_norm``), logs to ``metrics.jsonl``.

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
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from steerflow.errors import ConfigError, DataError, SolverError
from steerflow.io import write_json
from steerflow.train import checkpoint as ckpt
from steerflow.train.config import TrainConfig
from steerflow.train.consistency import training_solver
from steerflow.train.distributed import all_reduce_sum, any_rank, barrier, cleanup, init_distributed
from steerflow.train.metrics import METRICS_FILE, MetricsWriter, grad_norms, mean_std, read_metrics
from steerflow.train.objectives import ForwardPass, MicroBatch, objectives_state, token_nll
from steerflow.train.result import TrainResult
from steerflow.train.setup import Run, alpha_of, build_run, count_trainable
from steerflow.train.tasks import BatchSource

logger = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
#: ``final_loss`` is the mean training loss of the last this-many steps (paper 1, Table 1)
FINAL_LOSS_WINDOW = 50


class NonFiniteError(SolverError):
    """Training stopped on a NaN/inf loss or gradient (``on_nonfinite="stop"``)."""


# ---------------------------------------------------------------------------- pieces
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


def _pad_cat(rows: list[torch.Tensor]) -> torch.Tensor:
    """Right-pad token rows to one length and stack them; padded positions have no targets and,
    causal, no effect on the positions before them."""
    width = max(t.shape[1] for t in rows)
    return torch.cat([F.pad(t, (0, width - t.shape[1]), value=0) for t in rows])


# ---------------------------------------------------------------------------- the trainer
class Trainer:
    """A prepared run (:func:`~steerflow.train.setup.build_run`); :meth:`fit` trains it."""

    def __init__(self, run: Run) -> None:
        self.cfg, self.ctx = run.cfg, run.ctx
        self.out = run.cfg.out_dir
        self.t0 = time.time()
        self._bar = None
        self.tokenizer = run.tokenizer
        self.raw, self.model = run.model, run.wrapped
        self.source, self.anchor = run.source, run.anchor
        self.objectives = run.objectives
        self.field_constraint = run.field_constraint
        self.optimizer, self.scheduler, self.monitor = run.optimizer, run.scheduler, run.monitor
        self.step, self.resumed_from = run.step, run.resumed_from
        self.nonfinite_steps = run.nonfinite_steps
        self.alpha_start, self.elapsed_before = run.alpha_start, run.elapsed_before
        self.step_metrics: dict[str, torch.Tensor] = {}  # the objectives' values of this step

    @property
    def _anchor_loss(self) -> Optional[torch.Tensor]:
        """This step's mean anchor cross-entropy (what ``metrics.jsonl`` logs as ``anchor_loss``)."""
        return self.step_metrics.get("anchor_loss")

    def log(self, message: str) -> None:
        if self.ctx.is_main and not self.cfg.quiet:
            if self._bar is not None:
                self._bar.write(message, file=sys.stderr)
            else:
                print(message, file=sys.stderr, flush=True)

    def _alpha(self) -> Optional[float]:
        return alpha_of(self.raw)

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
        self.step_metrics = {name: torch.zeros((), device=ctx.device)
                             for o in self.objectives for name in o.metric_names}
        n = cfg.grad_accum
        own = {o.name: o.step_data(step, cfg.batch_size, ctx.rank, ctx.world_size)
               for o in self.objectives}
        own = {name: list(zip(*(_split(t, n) for t in data))) for name, data in own.items()
               if data is not None}  # name -> per micro-batch tuples
        parts = list(zip(_split(x, n), _split(y, n), _split(u, n)))
        for i, (xm, ym, um) in enumerate(parts):
            sync = i == len(parts) - 1 or not ctx.enabled
            with (contextlib.nullcontext() if sync else self.model.no_sync()):
                try:
                    part = self._micro_step(xm, ym, um, n_global, step,
                                            {name: data[i] for name, data in own.items()})
                except SolverError as exc:
                    if ctx.enabled:
                        raise
                    return math.nan, x.numel(), f"ODE solve failed: {exc}"
            loss_sum += part
        self._average_objective_grads()
        total = all_reduce_sum(loss_sum.reshape(1), ctx)
        return float(total) / n_global, x.numel() * ctx.world_size, None

    def _average_objective_grads(self) -> None:
        """The objectives' own parameters live outside DDP: average their gradients over ranks
        as DDP averages the model's (each rank's term is already its share of the global mean)."""
        if not self.ctx.enabled:
            return
        for p in (p for o in self.objectives for p in o.parameters()):
            if p.grad is not None:
                p.grad = all_reduce_sum(p.grad, self.ctx) / self.ctx.world_size

    def _micro_step(self, x, y, u, n_global: int, step: int = 0,
                    data: Optional[dict[str, tuple[torch.Tensor, ...]]] = None) -> torch.Tensor:
        """Forward and backward one micro-batch; return its summed next-token loss.

        The loss back-propagated is ``lm_weight · Σ CE · W / N + Σ objective terms``: with N the
        global batch's target count and W ranks, DDP's mean over ranks gives the global mean.
        """
        device = self.ctx.device
        batch = MicroBatch(x.to(device), y.to(device), None if u is None else u.to(device),
                           share=x.shape[0] * self.ctx.world_size / self.cfg.batch_size,
                           step=step, solver=training_solver(self.raw, self.cfg, step),
                           data={name: tuple(t.to(device) for t in ts)
                                 for name, ts in (data or {}).items()})
        forward = self._forward(batch)
        loss_sum = forward.nll.sum()
        objective = loss_sum * (self.ctx.world_size / n_global)
        for o in self.objectives:
            if o.lm_weight != 1.0:
                objective = o.lm_weight * objective
        for o in self.objectives:
            for term in o.terms(self.raw, batch, forward, self.step_metrics).values():
                objective = objective + term
        objective.backward()
        return loss_sum.detach()

    def _forward(self, batch: MicroBatch) -> ForwardPass:
        """One forward pass over the batch's rows and every row the objectives add (DDP allows
        one forward per backward)."""
        extra = {o.name: o.extra_rows(batch) for o in self.objectives}
        extra = {name: rows for name, rows in extra.items() if rows is not None}
        xs = [batch.x] + [rows[0] for rows in extra.values()]
        us = [batch.u] + [rows[1] for rows in extra.values()]
        x_in = batch.x if len(xs) == 1 else _pad_cat(xs)
        u_in = batch.u if len(xs) == 1 or batch.u is None else torch.cat(us)
        with contextlib.ExitStack() as stack, self._autocast():
            captured = {o.name: stack.enter_context(o.forward_context(self.raw))
                        for o in self.objectives}
            logits, _ = self.model(x_in, u_in, solver=batch.solver)  # (rows, T', V)
        logits = [part[:, :t.shape[1]] for part, t in zip(logits.split([t.shape[0] for t in xs]), xs)]
        return ForwardPass(logits=logits[0], nll=token_nll(logits[0], batch.y),  # (b, T)
                           rows=dict(zip(extra, logits[1:])), captured=captured,
                           autocast=self._autocast)

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
        field_norm = self.field_constraint() if self.field_constraint is not None else None
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
                **({} if field_norm is None else {"field_norm": field_norm}),
                **{name: float(value) for name, value in self.step_metrics.items()}}

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
        state = {"monitor": self.monitor.state_dict(), "nonfinite_steps": self.nonfinite_steps,
                 "alpha_start": self.alpha_start, "task": self.cfg.task,
                 "elapsed_s": self.elapsed()}
        objectives = objectives_state(self.objectives)
        return {**state, "objectives": objectives} if objectives else state

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
            write_json(self.out / SUMMARY_FILE, result.summary())
            self.log(result.summary_line())
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
        return Trainer(build_run(cfg, ctx, model, batch_source)).fit()
    finally:
        torch.set_num_threads(threads)
        cleanup(ctx)
