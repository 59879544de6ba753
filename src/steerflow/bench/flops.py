"""Analytic FLOPs per token, the nanoGPT way: 2 FLOPs per weight per token for a forward matmul.

Conventions (nanoGPT's ``estimate_mfu``, extended to the ODE block):

* Only matrix multiplications count; LayerNorm, activations, residual adds, the softmax and the
  solver's own ``h + dt·f`` arithmetic are left out (they are O(d) per token, not O(d²)).
* Embedding lookups are free; the untied LM head is a ``d × V`` matmul.
* Attention scores and the weighted sum of values cost ``2·T·d`` each per token and layer
  (``4·T·d``), counted over the full context ``T`` as nanoGPT does (no causal halving).
* A fixed-step solve evaluates the vector field ``steps × evals_per_step`` times.
* Training = forward + backward. Backprop through a matmul costs twice its forward (gradient of
  the input and of the weight); the control ``u`` is a constant, so its columns of the field's
  input layer cost a weight gradient only. With the adjoint method the backward pass re-evaluates
  the field once per backward evaluation and then takes its vector-Jacobian product
  (``2P + 4P`` per evaluation for a field with ``P`` weights), instead of ``4P`` for backprop
  through stored activations.

The per-example terms of the field (``W_u u`` is computed once per sequence, not per token) are
counted exactly, divided by the sequence length, so that :func:`forward_flops_per_token` equals
what ``torch.utils.flop_counter.FlopCounterMode`` counts for the matmuls of a forward pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from steerflow.config import ModelConfig, SolverSpec
from steerflow.errors import ConfigError


@dataclass(frozen=True)
class FieldFlops:
    """FLOPs of one vector-field evaluation, per token.

    ``per_token`` are the matmuls applied to every token (input and output layers, attention
    projections); ``per_token_const`` are those applied to a per-sequence input (the control u),
    already divided by the sequence length; ``attention`` is the score/value arithmetic of a
    ``block`` field.
    """

    per_token: float
    per_token_const: float
    attention: float

    @property
    def forward(self) -> float:
        return self.per_token + self.per_token_const + self.attention


@dataclass(frozen=True)
class FlopCount:
    """Analytic FLOPs per token of one model, split by part and by pass."""

    blocks: float          # discrete blocks' projections and MLPs, forward
    attention: float       # attention scores + values of the discrete blocks, forward
    head: float            # LM head, forward
    ode: float             # every field evaluation of the ODE solve, forward
    forward: float         # sum of the four above
    backward: float        # backward pass (backprop, or adjoint for the ODE block when enabled)
    nfe: int               # field evaluations per forward solve (0 for the baseline)
    adjoint: bool          # whether ``backward`` counts the ODE block's adjoint pass

    @property
    def training(self) -> float:
        """Forward + backward FLOPs per token (what MFU divides by)."""
        return self.forward + self.backward

    def as_dict(self) -> dict:
        return {**asdict(self), "training": self.training}


def block_flops(config: ModelConfig) -> float:
    """Forward matmul FLOPs per token of one discrete block: ``2 · 12 d²`` (qkv, proj, 4d MLP)."""
    d = config.n_embd
    return 2.0 * (3 * d * d + d * d + 2 * (4 * d * d))


def attention_flops(config: ModelConfig, seq_len: int) -> float:
    """Scores ``QKᵀ`` and weighted values ``AV`` of one attention layer, per token: ``4·T·d``."""
    return 4.0 * seq_len * config.n_embd


def field_flops(config: ModelConfig, seq_len: int) -> FieldFlops:
    """Matmul FLOPs of one evaluation of ``config.field``, per token of a length-``seq_len`` sequence."""
    d, hidden, c = config.n_embd, config.field_hidden, config.control_dim
    per_token = 2.0 * (d * hidden + hidden * d)  # input layer on H (and τ, elementwise) + output
    if config.injection == "concat":
        const = 2.0 * c * hidden / seq_len       # W_u u: once per sequence
    else:
        const = 2.0 * c * d / seq_len            # u_proj(u): once per sequence
    attention = 0.0
    if config.field == "block":
        per_token += 2.0 * (3 * d * d + d * d)   # the field's own attention projections
        attention = attention_flops(config, seq_len)
    elif config.field not in ("mlp", "contractive"):
        raise ConfigError(f"no FLOP formula for field {config.field!r}")
    return FieldFlops(per_token=per_token, per_token_const=const, attention=attention)


def solver_nfe(solver: SolverSpec) -> int:
    """Field evaluations of one fixed-step solve; adaptive solves have no analytic count."""
    if not solver.is_fixed_step:
        raise ConfigError(
            f"analytic FLOPs need a fixed-step solver (euler, midpoint, rk4); got {solver.describe()}")
    return int(solver.steps) * solver.evals_per_step


def flops_per_token(config: ModelConfig, seq_len: Optional[int] = None,
                    solver: Optional[SolverSpec] = None,
                    adjoint: Optional[bool] = None) -> FlopCount:
    """Analytic forward and backward FLOPs per token of ``config`` on sequences of ``seq_len``.

    Args:
        config: the model (baseline when ``ode_span`` is None).
        seq_len: tokens per sequence (default ``config.block_size``).
        solver: the ODE solver (default ``config.train_solver``), fixed-step.
        adjoint: count the ODE block's backward as the adjoint pass (default ``solver.adjoint``).
    """
    T = config.block_size if seq_len is None else seq_len
    if T < 1:
        raise ConfigError(f"seq_len must be >= 1, got {T}")
    solver = config.train_solver if solver is None else solver
    n_discrete = config.n_layer
    ode = 0.0
    ode_backward = 0.0
    nfe = 0
    if config.is_hybrid:
        start, end = config.ode_span
        n_discrete -= end - start
        nfe = solver_nfe(solver)
        use_adjoint = solver.adjoint if adjoint is None else adjoint
        f = field_flops(config, T)
        ode = nfe * f.forward
        # backprop: grad of input and weight for per-token matmuls and attention, weight only for u
        backprop = nfe * (2 * f.per_token + 2 * f.attention + f.per_token_const)
        # adjoint: each backward evaluation recomputes F, then the same vector-Jacobian product
        ode_backward = backprop + (nfe * f.forward if use_adjoint else 0.0)
    else:
        use_adjoint = False
    blocks = n_discrete * block_flops(config)
    attention = n_discrete * attention_flops(config, T)
    head = 2.0 * config.n_embd * config.vocab_size
    forward = blocks + attention + head + ode
    backward = 2 * (blocks + attention + head) + ode_backward
    return FlopCount(blocks=blocks, attention=attention, head=head, ode=ode, forward=forward,
                     backward=backward, nfe=nfe, adjoint=use_adjoint)


def flop_ratio(hybrid: ModelConfig, baseline: ModelConfig, seq_len: Optional[int] = None,
               solver: Optional[SolverSpec] = None, training: bool = False) -> float:
    """Analytic FLOPs per token, hybrid / baseline (forward, or forward + backward)."""
    h = flops_per_token(hybrid, seq_len, solver)
    b = flops_per_token(baseline, seq_len, solver)
    return h.training / b.training if training else h.forward / b.forward
