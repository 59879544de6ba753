"""The model behind the playground page: checked inputs, streamed generation, side by side.

Everything a browser or an API client sends arrives here as untyped widget values (a float
that may be NaN, a string that may be empty) and is checked before the model sees it; a bad
value is an :class:`~steerflow.errors.InputError` whose message the page shows. A page cannot
name a file: the checkpoint is fixed when the server starts.

One :class:`Playground` serves every request of a server. The model is shared, so each forward
pass runs under a lock (the ODE block records the stats of its last solve, which is how each
token's NFE is read); concurrent streams take turns token by token.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch

from steerflow.config import SolverSpec
from steerflow.errors import CheckpointError, InputError

#: the solver choices of the page: the checkpoint's training solver, or dopri5 at a tolerance
SOLVER_CHOICES = ("train", "dopri5")
#: the side-by-side view's default controls
DEFAULT_TRIPLE = (-1.0, 0.0, 1.0)


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. ``u_range`` bounds every control axis to
    ``[−u_range, u_range]``; ``max_nfe`` stops any ODE solve (one per token) past that many
    vector-field evaluations."""

    max_prompt_chars: int = 2000
    max_new_tokens: int = 200
    u_range: float = 3.0
    max_temperature: float = 5.0
    max_guidance: float = 10.0
    max_nfe: int = 1000
    max_seed: int = 2 ** 31 - 1

    def __post_init__(self) -> None:
        if self.max_nfe < 1 or self.max_new_tokens < 1 or self.max_prompt_chars < 1:
            raise InputError(f"serving limits must be >= 1, got {self}")


@dataclass(frozen=True)
class Sampling:
    """How one continuation is sampled; ``guidance`` γ > 0 samples ``z(0) + γ (z(u) − z(−u))``
    (:meth:`SteerFlowGPT.generate`), γ = 0 samples at u."""

    max_new_tokens: int = 20
    temperature: float = 1.0
    top_p: float = 0.9
    seed: int = 0
    guidance: float = 0.0


@dataclass
class Step:
    """A continuation so far: its text, token ids and the NFE of the solve behind each token."""

    u: list[float]
    text: str = ""
    tokens: list[int] = field(default_factory=list)
    nfe: list[int] = field(default_factory=list)
    #: the model ended the text (its last token is end-of-text, which ``text`` leaves out)
    ended: bool = False


def number(name: str, value: Any, lo: float, hi: float, *, low_open: bool = False) -> float:
    """``value`` as a finite float in ``[lo, hi]`` (``(lo, hi]`` when ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InputError(f"{name} must be a number, got {value!r}")
    try:
        x = float(value)
    except ValueError:
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if x < lo or x > hi or (low_open and x == lo):
        left = "(" if low_open else "["
        raise InputError(f"{name} = {x:g} is outside {left}{lo:g}, {hi:g}]")
    return x


def integer(name: str, value: Any, lo: int, hi: int) -> int:
    """``value`` as an integer in ``[lo, hi]`` (a float with no fractional part is accepted)."""
    x = number(name, value, lo, hi)
    if x != int(x):
        raise InputError(f"{name} must be a whole number, got {value!r}")
    return int(x)


def axis_names(checkpoint: str | Path, control_dim: int) -> list[str]:
    """A label per control axis: ``u`` (one axis) or ``u[i]``, followed by what the axis was
    trained on when the checkpoint's ``train_config.json`` records a steering run."""
    from steerflow.steer.evaluate import steer_run_info

    names = ["u"] if control_dim == 1 else [f"u[{i}]" for i in range(control_dim)]
    info = steer_run_info(checkpoint)
    axis, data = info.get("steer_axis", 0), info.get("steer_data")
    if isinstance(axis, int) and 0 <= axis < control_dim and isinstance(data, str) and data:
        what = "sentiment" if data in ("sst2", "sst2-shaped", "cloze") else Path(data).stem
        names[axis] = f"{names[axis]}: {what} ({Path(data).name})"
    return names


class Playground:
    """The model, its tokenizer and the limits of one server; every public method checks its
    raw inputs first. ``names`` labels the control axes (:func:`axis_names`)."""

    def __init__(self, model, limits: Limits = Limits(), names: Optional[Sequence[str]] = None,
                 title: str = "steerflow") -> None:
        if not model.config.is_hybrid:
            raise InputError("this checkpoint is a discrete baseline without a control u; the "
                             "playground steers u and needs a hybrid checkpoint")
        if model.tokenizer is None:
            raise CheckpointError("the checkpoint has no tokenizer.json; the playground needs "
                                  "the tokenizer saved with the model")
        self.model = model.eval()
        self.tokenizer = model.tokenizer
        self.limits = limits
        c = model.config.control_dim
        self.names = list(names) if names is not None else (["u"] if c == 1 else
                                                            [f"u[{i}]" for i in range(c)])
        if len(self.names) != c:
            raise InputError(f"{len(self.names)} axis names for control_dim {c}")
        self.title = title
        self.lock = threading.Lock()

    @classmethod
    def load(cls, checkpoint: str | Path, limits: Limits = Limits()) -> "Playground":
        """The playground of a checkpoint folder (loaded on the CPU, in eval mode)."""
        from steerflow.model.hub import load_model

        model = load_model(checkpoint)
        names = axis_names(checkpoint, model.config.control_dim)
        return cls(model, limits, names, title=Path(checkpoint).resolve().name)

    # ------------------------------------------------------------------ inputs
    @property
    def control_dim(self) -> int:
        return self.model.config.control_dim

    @property
    def max_new_tokens(self) -> int:
        """The most tokens one request may add: the limit, and one less than the context."""
        return min(self.limits.max_new_tokens, self.model.config.block_size - 1)

    def control(self, u: Any) -> list[float]:
        """One value per control axis, each in ``[−u_range, u_range]``; one number is put on
        every axis."""
        values = list(u) if isinstance(u, (list, tuple)) else [u]
        c = self.control_dim
        if len(values) not in (1, c):
            raise InputError(f"u has {len(values)} values; the model's control_dim is {c}")
        r = self.limits.u_range
        checked = [number(self.names[i] if len(values) == c else "u", v, -r, r)
                   for i, v in enumerate(values)]
        return checked * c if len(checked) == 1 else checked

    def sampling(self, max_new_tokens: Any = 20, temperature: Any = 1.0, top_p: Any = 0.9,
                 seed: Any = 0, guidance: Any = 0.0) -> Sampling:
        """Checked sampling settings (ranges in :class:`Limits`)."""
        lim = self.limits
        return Sampling(
            max_new_tokens=integer("max new tokens", max_new_tokens, 1, self.max_new_tokens),
            temperature=number("temperature", temperature, 0.0, lim.max_temperature,
                               low_open=True),
            top_p=number("top-p", top_p, 0.0, 1.0, low_open=True),
            seed=integer("seed", seed, 0, lim.max_seed),
            guidance=number("guidance γ", guidance, 0.0, lim.max_guidance))

    def solver(self, choice: Any = "train", tolerance: Any = 1e-3) -> SolverSpec:
        """``train``: the checkpoint's training solver (without the adjoint: nothing is
        differentiated here); ``dopri5``: rtol = ``tolerance``, atol = rtol / 10. Both stop past
        ``limits.max_nfe`` evaluations."""
        if choice not in SOLVER_CHOICES:
            raise InputError(f"solver {choice!r}: choose one of {', '.join(SOLVER_CHOICES)}")
        if choice == "train":
            return self.model.config.train_solver.replace(adjoint=False,
                                                          max_nfe=self.limits.max_nfe)
        rtol = number("tolerance", tolerance, 0.0, 1.0, low_open=True)
        return SolverSpec(method="dopri5", steps=None, rtol=rtol, atol=rtol / 10,
                          max_nfe=self.limits.max_nfe)

    def solver_label(self) -> str:
        """How the page names the training solver."""
        return f"training solver ({self.model.config.train_solver.replace(adjoint=False).describe()})"

    def encode(self, prompt: Any, max_new_tokens: int = 0) -> list[int]:
        """Token ids of ``prompt``, which must leave room for ``max_new_tokens`` in the context."""
        if not isinstance(prompt, str):
            raise InputError(f"the prompt must be text, got {type(prompt).__name__}")
        if not prompt.strip():
            raise InputError("the prompt is empty; type a few words to continue")
        if len(prompt) > self.limits.max_prompt_chars:
            raise InputError(f"the prompt has {len(prompt)} characters; at most "
                             f"{self.limits.max_prompt_chars} are accepted")
        ids = self.tokenizer.encode(prompt)
        room = self.model.config.block_size - max_new_tokens
        if not ids:
            raise InputError("the prompt encodes to no tokens; type a few words to continue")
        if len(ids) > room:
            raise InputError(f"the prompt has {len(ids)} tokens; with {max_new_tokens} new tokens "
                             f"at most {room} fit in the model's context of "
                             f"{self.model.config.block_size}: shorten it or ask for fewer tokens")
        return ids

    # ------------------------------------------------------------------ generation
    def stream(self, prompt: Any, u: Any, sampling: Sampling,
               solver: Optional[SolverSpec] = None) -> Iterator[Step]:
        """Yield the continuation after each new token, until ``max_new_tokens`` or the
        tokenizer's end-of-text (checked inputs; ``solver`` default: the training solver). A solve
        past ``max_nfe`` raises :class:`~steerflow.errors.SolverError` after the tokens before it
        were yielded."""
        control = self.control(u)
        ids = self.encode(prompt, sampling.max_new_tokens)
        solver = solver if solver is not None else self.solver("train")
        tokens = self.model.stream(
            torch.tensor([ids]), control, sampling.max_new_tokens,
            temperature=sampling.temperature, top_p=sampling.top_p, seed=sampling.seed,
            solver=solver, guidance=sampling.guidance or None, eos_id=self.tokenizer.eos_id)
        ids, nfe = [], []
        while True:
            with self.lock:  # one forward pass at a time: last_stats belongs to this token
                token = next(tokens, None)
                stats = self.model.ode.last_stats
            if token is None:
                return
            ids.append(int(token[0]))
            nfe.append(stats.nfe_forward)
            ended = ids[-1] == self.tokenizer.eos_id
            text = self.tokenizer.decode(ids[:-1] if ended else ids)
            yield Step(control, text, list(ids), list(nfe), ended)

    def generate(self, prompt: Any, u: Any, sampling: Sampling,
                 solver: Optional[SolverSpec] = None) -> Step:
        """The whole continuation (:meth:`stream`'s last step)."""
        last = Step(u=self.control(u))
        for last in self.stream(prompt, u, sampling, solver):
            pass
        return last

    def triple(self, values: Sequence[Any], base_u: Any, axis: Any = 0) -> list[list[float]]:
        """The side-by-side controls: ``base_u`` with axis ``axis`` set to each of ``values``."""
        if len(values) != 3:
            raise InputError(f"the side-by-side view compares three values of u, got {len(values)}")
        a = integer("axis", axis, 0, self.control_dim - 1)
        base = self.control(base_u)
        r = self.limits.u_range
        out = []
        for i, v in enumerate(values):
            u = list(base)
            u[a] = number(f"{self.names[a]} #{i + 1}", v, -r, r)
            out.append(u)
        return out

    def side_by_side(self, prompt: Any, controls: Sequence[Sequence[float]], sampling: Sampling,
                     solver: Optional[SolverSpec] = None) -> Iterator[list[Step]]:
        """The same prompt and seed under each control, streamed together: after each round
        of one token per continuation, yield all of them. Each equals :meth:`generate` at its u."""
        streams = [self.stream(prompt, u, sampling, solver) for u in controls]
        latest = [Step(u=self.control(u)) for u in controls]
        live = list(range(len(streams)))
        while live:
            for i in list(live):
                step = next(streams[i], None)
                if step is None:
                    live.remove(i)
                else:
                    latest[i] = step
            if live:
                yield list(latest)
