"""Depth refinement: does a trained continuous transformer have a limit as the step count grows?

Paper 2: a residual stack ``x_{n+1} = x_n + h·f(x_n, τ_n)`` with ``h = 1/N`` converges to the ODE
``dx/dτ = f(x, τ)`` as N → ∞ (Euler: error O(1/N)) — when ``f`` is Lipschitz in x and regular in
τ. Sander et al. (NeurIPS 2022, "Do residual neural networks discretize neural ODEs?") found that
trained networks have such a limit only when their weights are smooth in depth.

:class:`DepthLM` is a small language model whose middle is ``dx/dτ = F(x, τ)`` with ``F`` a full
pre-LN transformer block (attention + MLP) whose weights depend on depth through a basis:

* ``legendre`` — smooth: ``W(τ) = Σ_k P_k(2τ − 1) W_k`` over K shifted Legendre polynomials,
  with K < N₀ so that the weights cannot vary faster than the step grid resolves (with K = N₀
  the K coefficients are just a re-parametrisation of N₀ independent layers, and the
  polynomial through them may swing wildly between the grid points);
* ``piecewise`` — not smooth: ``W(τ) = W_⌊Kτ⌋``, independent weights per training step (K = N₀),
  i.e. an ordinary N₀-layer transformer with steps 1/N₀. Refining it keeps each layer's
  weights over its whole step, so the limit is the ODE with piecewise-constant coefficients;
* ``linear`` — the same independent per-step weights, linearly interpolated between the step
  nodes (Sander et al.'s refinement of a trained ResNet). At N₀ steps it is the same model as
  ``piecewise``; at 2N₀ the new half-steps use averages of neighbouring layers, which stay
  close to either neighbour only if the trained weights are smooth in depth.

We train each with N₀ Euler steps on real
text, then evaluate with N = N₀, 2N₀, 4N₀, … and report how the final hidden state and the
validation loss move with N. A convergent sequence has successive differences ``‖H_N − H_{2N}‖``
falling like 1/N; the question is how far the trained N₀-step model is from the limit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from steerflow.analysis.convergence import fit_order, roundoff_floor
from steerflow.errors import ConfigError

BASES = ("legendre", "piecewise", "linear")
INITS = ("iid", "smooth")


def legendre_basis(tau: float, size: int) -> list[float]:
    """Shifted Legendre polynomials ``P_k(2τ − 1)``, k < size (Bonnet's recurrence)."""
    s = 2.0 * tau - 1.0
    values = [1.0, s][:size]
    for k in range(1, size - 1):
        values.append(((2 * k + 1) * s * values[k] - k * values[k - 1]) / (k + 1))
    return values


def linear_basis(tau: float, size: int) -> list[float]:
    """Hat functions at the nodes ``k/size``: linear interpolation of per-step weights in τ.

    At the nodes it equals :func:`piecewise_basis`; past the last node ``(size−1)/size`` it stays
    on the last weight (constant extrapolation).
    """
    x = min(size * tau, size - 1.0)
    return [max(0.0, 1.0 - abs(x - k)) for k in range(size)]


def piecewise_basis(tau: float, size: int) -> list[float]:
    """The indicator of piece ``⌊size·τ⌋`` (τ = 1 belongs to the last piece)."""
    index = min(int(math.floor(size * tau + 1e-9)), size - 1)  # 1e-9: τ = k/size lands on piece k
    return [1.0 if k == index else 0.0 for k in range(size)]


@dataclass(frozen=True)
class DepthConfig:
    """Shape of a :class:`DepthLM` and its depth basis.

    ``init="iid"`` draws every basis coefficient independently (for ``piecewise``: an ordinary
    randomly initialised N₀-layer stack); ``init="smooth"`` starts depth-independent (the same
    weights at every τ), Sander et al.'s smooth initialisation.
    """

    vocab_size: int
    block_size: int = 64
    n_embd: int = 64
    n_head: int = 2
    basis: str = "legendre"
    basis_size: int = 4
    init: str = "iid"

    def __post_init__(self) -> None:
        if self.basis not in BASES:
            raise ConfigError(f"basis must be one of {', '.join(BASES)}, got {self.basis!r}")
        if self.init not in INITS:
            raise ConfigError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        for name in ("vocab_size", "block_size", "n_embd", "n_head", "basis_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"DepthConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_head={self.n_head} must divide n_embd={self.n_embd}")

    def coefficients(self, tau: float) -> list[float]:
        """φ(τ): the basis weights at depth τ."""
        fn = {"legendre": legendre_basis, "piecewise": piecewise_basis,
              "linear": linear_basis}[self.basis]
        return fn(tau, self.basis_size)


class DepthLinear(nn.Module):
    """``y = W(τ) x + b(τ)`` with ``W(τ) = Σ_k φ_k(τ) W_k``.

    ``init="iid"``: each ``W_k`` drawn independently. ``init="smooth"``: ``W(τ)`` starts
    constant in τ — one draw copied to every piece, or put on the constant Legendre polynomial.
    """

    def __init__(self, d_in: int, d_out: int, size: int, std: float = 0.02, init: str = "iid",
                 basis: str = "piecewise") -> None:
        super().__init__()
        weight = torch.randn(size, d_out, d_in) * std  # (K, out, in)
        if init == "smooth":
            if basis == "legendre":
                weight[1:] = 0.0  # W(τ) = P_0·W_0 = W_0
            else:
                weight[:] = weight[0].clone()  # the same W_0 on every piece
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(size, d_out))

    def forward(self, x: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        weight = torch.einsum("k,koi->oi", phi, self.weight)  # W(τ)
        return F.linear(x, weight, phi @ self.bias)

    def weight_at(self, phi: torch.Tensor) -> torch.Tensor:
        return torch.einsum("k,koi->oi", phi, self.weight)


class DepthLayerNorm(nn.Module):
    """LayerNorm whose gain and shift depend on τ through the basis (gain starts at 1)."""

    def __init__(self, d: int, size: int, first_is_constant: bool) -> None:
        super().__init__()
        gain = torch.zeros(size, d)
        # Legendre: P_0 ≡ 1 carries the unit gain; piecewise: every piece gets gain 1
        gain[0 if first_is_constant else slice(None)] = 1.0
        self.weight = nn.Parameter(gain)
        self.bias = nn.Parameter(torch.zeros(size, d))

    def forward(self, x: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], phi @ self.weight, phi @ self.bias)


class DepthBlockField(nn.Module):
    """``F(x, τ) = a + MLP_τ(LN₂(x + a))``, ``a = Attn_τ(LN₁(x))``: a pre-LN block with weights W(τ).

    ``x + F(x, τ)`` is exactly a pre-LN transformer block, so an Euler step of size 1 is a layer.
    """

    def __init__(self, config: DepthConfig) -> None:
        super().__init__()
        d, K = config.n_embd, config.basis_size
        self.config = config
        constant_first = config.basis == "legendre"
        self.ln_1 = DepthLayerNorm(d, K, constant_first)
        self.ln_2 = DepthLayerNorm(d, K, constant_first)
        kw = {"init": config.init, "basis": config.basis}
        self.qkv = DepthLinear(d, 3 * d, K, **kw)
        self.attn_out = DepthLinear(d, d, K, **kw)
        self.fc_in = DepthLinear(d, 4 * d, K, **kw)
        self.fc_out = DepthLinear(4 * d, d, K, **kw)

    def linears(self) -> list[DepthLinear]:
        return [self.qkv, self.attn_out, self.fc_in, self.fc_out]

    def phi(self, tau: float, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.config.coefficients(tau), dtype=like.dtype, device=like.device)

    def forward(self, tau: float, x: torch.Tensor) -> torch.Tensor:
        phi = self.phi(tau, x)  # (K,)
        B, T, C = x.shape
        nh = self.config.n_head
        q, k, v = self.qkv(self.ln_1(x, phi), phi).split(C, dim=2)
        q, k, v = (z.view(B, T, nh, C // nh).transpose(1, 2) for z in (q, k, v))  # (B, nh, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        a = self.attn_out(y.transpose(1, 2).reshape(B, T, C), phi)  # (B, T, d)
        m = self.fc_out(F.gelu(self.fc_in(self.ln_2(x + a, phi), phi)), phi)
        return a + m


class DepthLM(nn.Module):
    """Embeddings → ``dx/dτ = F(x, τ)`` on [0, 1] by Euler with N steps → LayerNorm → LM head."""

    def __init__(self, config: DepthConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.field = DepthBlockField(config)
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        for emb in (self.wte, self.wpe):
            nn.init.normal_(emb.weight, std=0.02)
        nn.init.normal_(self.lm_head.weight, std=0.02)

    def flow(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        """Euler on τ ∈ [0, 1]: ``x ← x + (1/N)·F(x, n/N)`` (paper 2's residual stack)."""
        h = 1.0 / steps
        for n in range(steps):
            x = x + h * self.field(n * h, x)
        return x

    def forward(self, idx: torch.Tensor, steps: int, targets: Optional[torch.Tensor] = None):
        """Logits ``(B, T, V)``, the loss (if ``targets``), and ``(H(0), H(1))``."""
        pos = torch.arange(idx.shape[1], device=idx.device)
        h0 = self.wte(idx) + self.wpe(pos)  # (B, T, d)
        h1 = self.flow(h0, steps)
        logits = self.lm_head(self.ln_f(h1))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss, (h0, h1)


def depth_roughness(model: DepthLM, steps: int) -> float:
    """Mean over linear maps of ``‖W(τ_{n+1}) − W(τ_n)‖ / ‖W(τ_n)‖`` on the N-step grid τ_n = n/N.

    O(1/N) for weights smooth in depth, O(1) for independent weights per layer (Sander et al.).
    """
    values = []
    with torch.no_grad():
        for linear in model.field.linears():
            like = linear.weight
            ws = [linear.weight_at(model.field.phi(n / steps, like)) for n in range(steps)]
            values += [float((b - a).norm() / a.norm()) for a, b in zip(ws, ws[1:])]
    return float(np.mean(values)) if values else 0.0


@dataclass
class TrainLog:
    losses: list[float]
    seconds: float


def train_depth_lm(model: DepthLM, batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
                   iters: int, steps: int, lr: float = 3e-3, warmup: int = 20,
                   progress: Optional[Callable[[int, float], None]] = None) -> TrainLog:
    """AdamW with linear warm-up and cosine decay to 10 %, gradient clipping at 1.

    ``batch(i)`` returns the i-th training batch ``(x, y)``; ``steps`` is the Euler step count N₀.
    """
    import time

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)

    def lr_at(i: int) -> float:
        if i < warmup:
            return lr * (i + 1) / warmup
        frac = (i - warmup) / max(1, iters - warmup)
        return lr * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))  # cosine from lr to 0.1·lr

    model.train()
    losses, start = [], time.perf_counter()
    for i in range(iters):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(i)
        x, y = batch(i)
        _, loss, _ = model(x, steps, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(i, losses[-1])
    model.eval()
    return TrainLog(losses, time.perf_counter() - start)


@dataclass
class RefinementResult:
    """How one trained model behaves as the step count N grows.

    ``state_change[i]`` is ``‖H_{N_i}(1) − H_{N_{i+1}}(1)‖ / ‖H(1) − H(0)‖`` (successive
    refinement, float64), ``gap_to_finest[i]`` the same distance to the finest N; ``order`` the
    fitted slope of ``state_change`` against N (−1 when the Euler sequence converges).
    """

    label: str
    basis: str
    train_steps: int
    eval_steps: list[int]
    val_loss: list[float]
    state_change: list[float]
    gap_to_finest: list[float]
    order: Optional[float]
    roughness: float
    train_loss_end: float
    train_seconds: float
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def evaluate_refinement(model: DepthLM, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                        eval_steps: Sequence[int]
                        ) -> tuple[list[float], list[float], list[float], Optional[float], float]:
    """Validation loss at each N in ``eval_steps``, and end-state convergence on the first batch.

    Losses in the model's dtype; states in float64 so that the successive differences are not
    roundoff. Returns ``(val_loss, state_change, gap_to_finest, fitted order of state_change,
    ‖H(1) − H(0)‖ / ‖H(0)‖ at the finest N)``.
    """
    import copy

    model.eval()
    model64 = copy.deepcopy(model).double()
    losses, finals = [], []
    with torch.no_grad():
        for n in eval_steps:
            losses.append(float(np.mean([float(model(x, n, y)[1]) for x, y in batches])))
            _, _, (h0, h1) = model64(batches[0][0], n)
            finals.append(h1)
        scale = float((finals[-1] - h0).norm())
        change = [float((a - b).norm()) / scale for a, b in zip(finals, finals[1:])]
        gap = [float((f - finals[-1]).norm()) / scale for f in finals[:-1]]
        floor = roundoff_floor(finals[-1]) / scale
        displacement = scale / float(h0.norm())
    fit = fit_order("euler", list(eval_steps[:-1]), change, floor, window=len(change))
    return losses, change, gap, fit.slope, displacement


def with_basis(model: DepthLM, basis: str) -> DepthLM:
    """A copy of ``model`` whose weights are read through another basis of the same size."""
    import copy

    other = copy.deepcopy(model)
    config = DepthConfig(**{**asdict(model.config), "basis": basis})
    other.config = config
    other.field.config = config
    return other


def refinement_study(basis: str, config: DepthConfig, train_batch, val_batches, *,
                     train_steps: int = 8, iters: int = 300, lr: float = 3e-3,
                     refinements: int = 4, seed: int = 0, init: str = "iid",
                     progress=None) -> list[RefinementResult]:
    """Train a :class:`DepthLM` with ``basis`` at N₀ = ``train_steps``, then evaluate at N₀·2^j.

    For ``piecewise`` the basis has one piece per training step (``basis_size = train_steps``),
    and the trained model is evaluated twice: with piecewise-constant and with linearly
    interpolated weights (``linear``). Returns one :class:`RefinementResult` per evaluation.
    """
    if basis not in ("legendre", "piecewise"):
        raise ConfigError(f"train with basis 'legendre' or 'piecewise', got {basis!r}")
    size = train_steps if basis == "piecewise" else config.basis_size
    config = DepthConfig(**{**asdict(config), "basis": basis, "basis_size": size, "init": init})
    torch.manual_seed(seed)
    model = DepthLM(config)
    log = train_depth_lm(model, train_batch, iters, train_steps, lr, progress=progress)
    eval_steps = [train_steps * 2 ** j for j in range(refinements)]
    variants = [model] if basis == "legendre" else [model, with_basis(model, "linear")]
    results = []
    for variant in variants:
        losses, change, gap, order, displacement = evaluate_refinement(variant, val_batches,
                                                                       eval_steps)
        label = f"{basis} ({init} init)" + ("" if variant is model else ", interpolated")
        results.append(RefinementResult(
            label, variant.config.basis, train_steps, eval_steps, losses, change, gap, order,
            depth_roughness(model, train_steps), float(np.mean(log.losses[-20:])), log.seconds,
            {"trained_basis": basis, "params": sum(p.numel() for p in model.parameters()),
             "displacement_over_state": displacement, "config": asdict(variant.config)}))
    return results
