"""Configuration objects: the ODE solver spec and the model config, both validated on construction.

A config is plain data. It is saved as ``config.json`` next to every checkpoint and read back
with :meth:`ModelConfig.from_dict`, which refuses unknown keys and wrong types instead of
guessing (a typo in a config is an error, never a silently ignored option).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from steerflow.errors import ConfigError

FIXED_STEP_METHODS = ("euler", "midpoint", "rk4")
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")
#: Euler with a step size per token on the ``steps`` grid (:mod:`steerflow.model.per_token`)
PER_TOKEN_METHOD = "per-token"
SOLVER_METHODS = FIXED_STEP_METHODS + ADAPTIVE_METHODS + (PER_TOKEN_METHOD,)

FIELD_KINDS = ("mlp", "block", "contractive", "depth-block")
INJECTION_MODES = ("concat", "add")
ACTIVATIONS = ("softplus", "gelu", "tanh")
ALPHA_SHAPES = ("scalar", "channel")
#: ``nn.GELU(approximate=...)`` of the blocks' MLP: ``none`` (erf) or GPT-2's ``tanh`` ("gelu_new")
GELU_APPROXIMATIONS = ("none", "tanh")


def _check_fields(cls: type, data: dict[str, Any]) -> None:
    """Reject keys that are not fields of the dataclass ``cls``, naming the valid ones."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__} expects a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} key(s) {unknown}; valid keys are: {', '.join(sorted(names))}"
        )


def _type_ok(value: Any, annotation: Any) -> bool:
    """Whether ``value`` matches a (simple) type annotation; bools are not accepted as numbers."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is tuple:
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: any length
            return isinstance(value, tuple) and all(_type_ok(v, args[0]) for v in value)
        return (
            isinstance(value, tuple)
            and len(value) == len(args)
            and all(_type_ok(v, a) for v, a in zip(value, args))
        )
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _check_types(obj: Any) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if not _type_ok(value, hints[f.name]):
            raise ConfigError(
                f"{type(obj).__name__}.{f.name} must be {hints[f.name]}, got {value!r} "
                f"({type(value).__name__})"
            )


@dataclass(frozen=True)
class SolverSpec:
    """How to integrate the ODE block: one small typed object instead of an options dict.

    Args:
        method: a torchdiffeq method name: fixed-step ``euler``, ``midpoint``, ``rk4`` or adaptive
            ``dopri5``, ``dopri8``, ``bosh3``, ``adaptive_heun``, ``fehlberg2``; or
            ``per-token``: Euler where every token of a position-wise field takes its own steps
            on the ``steps`` grid, chosen by an embedded error estimate against rtol / atol
            (:mod:`steerflow.model.per_token`; inference and backpropagation, no adjoint).
        steps: number of equal steps on τ ∈ [0, 1] (fixed-step methods; for ``per-token`` the
            finest grid, whose cells its steps span).
        rtol, atol: tolerances (adaptive and per-token methods only).
        adjoint: compute gradients with the adjoint method (``odeint_adjoint``), so memory does not
            grow with the number of steps.
        max_nfe: the solve raises :class:`~steerflow.errors.SolverError` past this many
            vector-field evaluations instead of running on.
        fused: run fixed-step solves without the adjoint through steerflow's plain loop (same
            arithmetic as torchdiffeq, less per-step overhead); False forces torchdiffeq.
    """

    method: str = "euler"
    steps: Optional[int] = 4
    rtol: float = 1e-3
    atol: float = 1e-4
    adjoint: bool = False
    max_nfe: int = 10_000
    fused: bool = True

    def __post_init__(self) -> None:
        _check_types(self)
        if self.method not in SOLVER_METHODS:
            raise ConfigError(
                f"unknown solver method {self.method!r}; choose one of {', '.join(SOLVER_METHODS)}"
            )
        if self.is_fixed_step or self.is_per_token:
            if self.steps is None or self.steps < 1:
                raise ConfigError(
                    f"solver {self.method!r} needs steps >= 1 (its grid), got {self.steps}"
                )
        if self.is_per_token and self.adjoint:
            raise ConfigError("the per-token solver has no adjoint (it backpropagates through "
                              "its steps); set adjoint=False")
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"SolverSpec.{name} must be a positive finite number, got {value}")
        if self.max_nfe < 1:
            raise ConfigError(f"SolverSpec.max_nfe must be >= 1, got {self.max_nfe}")

    @property
    def is_fixed_step(self) -> bool:
        return self.method in FIXED_STEP_METHODS

    @property
    def is_per_token(self) -> bool:
        return self.method == PER_TOKEN_METHOD

    @property
    def evals_per_step(self) -> int:
        """Vector-field evaluations per step of a fixed-step method (torchdiffeq's rk4 is the 3/8 rule)."""
        return {"euler": 1, "midpoint": 2, "rk4": 4}[self.method]

    def describe(self) -> str:
        if self.is_fixed_step:
            text = f"{self.method}, {self.steps} steps"
        elif self.is_per_token:
            text = f"per-token euler on {self.steps} steps, rtol={self.rtol:g}, atol={self.atol:g}"
        else:
            text = f"{self.method}, rtol={self.rtol:g}, atol={self.atol:g}"
        return text + (", adjoint" if self.adjoint else "")

    def replace(self, **changes: Any) -> "SolverSpec":
        return dataclasses.replace(self, **changes)

    @classmethod
    def parse(cls, text: str, **overrides: Any) -> "SolverSpec":
        """Parse a compact spec such as ``euler:4``, ``rk4:8``, ``dopri5``, ``dopri5:1e-6`` or
        ``per-token:1e-3``.

        For fixed-step methods the number after the colon is the step count; for adaptive and
        per-token ones it is rtol (atol is set to rtol / 10 unless overridden; a per-token solve
        keeps ``steps``' default grid unless overridden).
        """
        method, _, arg = text.strip().partition(":")
        kwargs: dict[str, Any] = {"method": method}
        if method in ADAPTIVE_METHODS:
            kwargs["steps"] = None
        if arg:
            try:
                if method in FIXED_STEP_METHODS:
                    kwargs["steps"] = int(arg)
                else:
                    kwargs["rtol"] = float(arg)
                    kwargs["atol"] = float(arg) / 10
            except ValueError:
                raise ConfigError(
                    f"cannot parse solver spec {text!r}; use e.g. 'euler:4', 'dopri5:1e-5' or "
                    f"'per-token:1e-3'"
                ) from None
        kwargs.update(overrides)
        return cls(**kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SolverSpec":
        _check_fields(cls, data)
        return cls(**data)


def _default_train_solver() -> SolverSpec:
    # Paper 1: 4 fixed Euler steps of 0.25, gradients by the adjoint method.
    return SolverSpec(method="euler", steps=4, adjoint=True)


def _default_eval_solver() -> SolverSpec:
    return SolverSpec(method="euler", steps=4, adjoint=False)


@dataclass
class ModelConfig:
    """Shape and options of a (hybrid) continuous-depth GPT.

    The discrete layers are numbered ``0 .. n_layer-1`` as in the equivalent discrete model;
    ``ode_span = (start, end)`` replaces layers ``start .. end-1`` by one ODE block
    (paper 1: ``(2, 4)`` in a 6-layer model). ``ode_span=None`` is the discrete baseline.

    ``field="depth-block"`` is a transformer block whose weights move smoothly with depth through
    one block per replaced layer (:mod:`steerflow.model.depth_field`); the ``field_*`` and
    ``time_conditioning`` options shape the other fields.
    """

    vocab_size: int = 50257
    block_size: int = 128
    n_layer: int = 6
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.0
    bias: bool = True
    tie_weights: bool = False
    ode_span: Optional[tuple[int, int]] = (2, 4)
    control_dim: int = 1
    #: what each control axis steers (e.g. ``("sentiment", "register")``): empty, or one distinct
    #: name per axis; a checkpoint keeps the names of the attributes its u was trained on
    control_axes: tuple[str, ...] = ()
    field: str = "mlp"
    injection: str = "concat"
    field_hidden: int = 256
    field_activation: str = "softplus"
    field_norm: bool = True
    time_conditioning: bool = True
    alpha_init: float = 0.1
    alpha_shape: str = "scalar"
    #: u enters the field as ``control_gain · W_u u`` (:class:`~steerflow.model.vector_fields.ControlledLinear`)
    control_gain: float = 1.0
    #: a direct control path: the mlp field adds ``control_gain · W_o u`` to F (W_o zero-initialised)
    control_out: bool = False
    #: rank r of the mlp field's u-gated adapter ``g · Σ_a u_a B_a σ(A LN(H))`` (0: none; B zero-initialised)
    control_adapter: int = 0
    contractive_gamma: float = 1.0
    #: the GELU of the blocks' MLP: ``none`` (exact, erf) or ``tanh`` (GPT-2's "gelu_new")
    gelu_approximate: str = "none"
    train_solver: SolverSpec = dataclasses.field(default_factory=_default_train_solver)
    eval_solver: SolverSpec = dataclasses.field(default_factory=_default_eval_solver)

    def __post_init__(self) -> None:
        if isinstance(self.ode_span, list):
            self.ode_span = tuple(self.ode_span)
        if isinstance(self.control_axes, list):  # read back from JSON
            self.control_axes = tuple(self.control_axes)
        for name in ("train_solver", "eval_solver"):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, SolverSpec.from_dict(value))
        _check_types(self)
        positive = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "control_dim",
                    "field_hidden")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"n_head={self.n_head} must divide n_embd={self.n_embd}; change one of them"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.ode_span is not None:
            start, end = self.ode_span
            if not 0 <= start < end <= self.n_layer:
                raise ConfigError(
                    f"ode_span={self.ode_span} must satisfy 0 <= start < end <= n_layer="
                    f"{self.n_layer} (it names the discrete layers the ODE block replaces)"
                )
        for name, allowed in (("field", FIELD_KINDS), ("injection", INJECTION_MODES),
                              ("field_activation", ACTIVATIONS), ("alpha_shape", ALPHA_SHAPES),
                              ("gelu_approximate", GELU_APPROXIMATIONS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"ModelConfig.{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}"
                )
        self._check_axes()
        if not (self.alpha_init > 0 and math.isfinite(self.alpha_init)):
            raise ConfigError(f"alpha_init must be a positive finite number, got {self.alpha_init}")
        if self.control_out and self.field != "mlp":
            raise ConfigError(f"control_out is a path of the mlp field; this config's field is "
                              f"{self.field!r}")
        if self.control_adapter < 0 or (self.control_adapter and self.field != "mlp"):
            raise ConfigError(f"control_adapter is the rank of a path of the mlp field (>= 0); got "
                              f"{self.control_adapter} with field {self.field!r}")
        if not (self.control_gain > 0 and math.isfinite(self.control_gain)):
            raise ConfigError(f"control_gain must be a positive finite number, got {self.control_gain}")
        if not (self.contractive_gamma > 0 and math.isfinite(self.contractive_gamma)):
            raise ConfigError(f"contractive_gamma must be > 0, got {self.contractive_gamma}")

    def _check_axes(self) -> None:
        names = self.control_axes
        if names and len(names) != self.control_dim:
            raise ConfigError(f"control_axes {list(names)} names {len(names)} axes but control_dim "
                              f"is {self.control_dim}; give one name per axis (or none)")
        if any(not n.strip() for n in names) or len(set(names)) != len(names):
            raise ConfigError(f"control_axes must be distinct non-empty names, got {list(names)}")

    # --- derived -------------------------------------------------------------------------
    @property
    def is_hybrid(self) -> bool:
        return self.ode_span is not None

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def layer_layout(self) -> list[str]:
        """Human-readable list of the stack, e.g. ``['block 0', 'block 1', 'ode (2-3)', ...]``."""
        layout, layer = [], 0
        while layer < self.n_layer:
            if self.ode_span is not None and layer == self.ode_span[0]:
                start, end = self.ode_span
                layout.append(f"ode (replaces {start}-{end - 1}, field={self.field})")
                layer = end
            else:
                layout.append(f"block {layer}")
                layer += 1
        return layout

    # --- (de)serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["ode_span"] is not None:
            data["ode_span"] = list(data["ode_span"])
        data["control_axes"] = list(data["control_axes"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        _check_fields(cls, data)
        return cls(**data)

    def to_json(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "ModelConfig":
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def as_baseline(self) -> "ModelConfig":
        """The discrete model of the same shape (no ODE block)."""
        return self.replace(ode_span=None)

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "ModelConfig":
        """A named preset: ``tiny``, ``small``, ``mid``, ``paper`` or ``gpt2`` (hybrid by default).

        Pass ``ode_span=None`` (or call :meth:`as_baseline`) for the discrete baseline.
        """
        if name not in PRESETS:
            raise ConfigError(f"unknown config {name!r}; presets are {', '.join(PRESETS)}")
        values = dict(PRESETS[name])
        values.update(overrides)
        return cls(**values)


#: Named presets. ``paper`` is paper 1's configuration: the discrete baseline of this shape has
#: exactly 30,503,424 parameters. ``small`` trains in minutes on 2 CPU cores; ``tiny`` in seconds.
#: ``mid`` lies between ``small`` and ``paper`` on a log scale of parameters (about 9 M for the
#: baseline: ``steerflow experiment scale``'s middle size).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(vocab_size=512, block_size=32, n_layer=4, n_head=2, n_embd=32, ode_span=(1, 3),
                 field_hidden=32),
    "small": dict(vocab_size=4096, block_size=64, n_layer=6, n_head=4, n_embd=128,
                  ode_span=(2, 4), field_hidden=128),
    "mid": dict(vocab_size=16384, block_size=128, n_layer=6, n_head=4, n_embd=192,
                ode_span=(2, 4), field_hidden=192),
    "paper": dict(vocab_size=50257, block_size=128, n_layer=6, n_head=4, n_embd=256,
                  ode_span=(2, 4), field_hidden=256),
    "gpt2": dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768,
                 ode_span=(4, 8), field_hidden=768),
}
