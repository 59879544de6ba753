"""``TrainConfig``: every option of ``steerflow train`` in one validated dataclass.

The config is saved as ``OUT/train_config.json`` when a run starts. Fields left at ``None`` are
filled from the model preset's training defaults (:data:`TRAIN_DEFAULTS`) in ``__post_init__``,
so the saved file always states the values the run used.

Gradient events (counted per step, reported in ``summary.json``):

* **vanishing** — the total gradient norm, or the ODE block's, is below ``vanish_floor``.
* **exploding** — the total gradient norm is non-finite, or above ``explode_factor`` × the median
  of the last ``explode_window`` finite norms (judged once at least ``EXPLODE_MIN_HISTORY`` norms
  are known).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from steerflow.config import PRESETS, ModelConfig, _check_fields, _check_types
from steerflow.errors import ConfigError
from steerflow.train.teacher_spec import check_teacher, parse_teacher  # noqa: F401

TASKS = ("lm", "steer", "expert", "distill")
#: tasks that start from a checkpoint (--from)
FROM_CHECKPOINT = ("steer", "expert", "distill")
#: tasks that train the ODE block of a checkpoint with the rest frozen
CONTROL_TASKS = ("steer", "distill")
MODEL_KINDS = ("baseline", "hybrid")
DTYPES = ("float32", "bfloat16")
NONFINITE_ACTIONS = ("skip", "stop")
LM_U_MODES = ("zero", "random", "conditional")
#: options that only the control tasks (``steer``, ``distill``) accept (their defaults switch
#: them off)
STEER_ONLY = ("steer_anchor", "train_final_norm", "control_gain", "control_out", "train_head",
              "control_only", "control_adapter")
STEER_ALPHA = ("frozen", "trained")
STEER_ALPHA_VALUES = ("auto", "keep", "init")
#: an exploding step is judged against a running median only once this many norms are known
EXPLODE_MIN_HISTORY = 10
#: ``ode_consistency`` of the control tasks. Steering alone can break the ODE's solver invariance
#: (displacement divergence 6.6 % to 107 % on ``small``, docs/results/solver_invariance_small.md),
#: and λ = 100 repaired it (0.87 %) — but it also stops a fresh field from learning u (on ``tiny``,
#: 100 steps: the probe does not move under λ = 100 or 10) and makes a ``small`` steering step 3-5×
#: slower. So it is off by default (the paper's objective) and the invariance study measures the
#: steered model; ``--ode-consistency 100`` turns it on.
CONTROL_CONSISTENCY = 0.0
#: GeDi's discriminative weight 1 − λ: salesforce/GeDi trains with gen_weight λ = 0.8
#: (scripts/run_training.sh), loss = λ·L_g + (1 − λ)·L_d (``--steer-discriminative`` alone)
GEDI_WEIGHT = 0.2

#: Training defaults per model preset (used for fields left at None). ``small``: 300 steps of
#: 32 × 64 tokens at about 0.75 CPU-seconds per step (about 2-4 minutes on 2 cores); lr 3e-3 beat
#: 1e-3 and 6e-3 in a 100-step sweep on WikiText-2 (docs/results/gradient_stability_small.md).
#: ``paper`` follows paper 1: 500 steps of 8 × 128 tokens. The paper does not state its training
#: batch; it times inference on batches of 8 (Experiment 4), and its 500-step loss (6.45-6.47)
#: fits about half a million training tokens, so we train on 8 too. Its learning rate is not
#: given; 1e-3 is ours.
TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": dict(steps=40, batch_size=8, lr=3e-3, warmup_steps=4),
    "small": dict(steps=300, batch_size=32, lr=3e-3, warmup_steps=30),
    "paper": dict(steps=500, batch_size=8, lr=1e-3, warmup_steps=50),
    "gpt2": dict(steps=2000, batch_size=32, lr=6e-4, warmup_steps=200),
}
_GENERIC_DEFAULTS = TRAIN_DEFAULTS["small"]
#: fields that may change between a run and its ``--resume`` (they do not change the trajectory)
RESUME_FREE = frozenset({"out", "resume", "quiet", "data_dir", "cache_dir", "device", "threads",
                         "compile", "eval_interval", "eval_batches", "test_batches",
                         "eval_batch_size", "save_every", "keep_checkpoints"})


def default_tokenizer(config_name: str, vocab_size: int) -> str:
    """``bpe:<preset vocab>`` for the small presets, GPT-2's BPE for ``paper``/``gpt2``."""
    return "gpt2" if config_name in ("paper", "gpt2") else f"bpe:{vocab_size}"


@dataclass
class TrainConfig:
    """Options of one training run (``steerflow train``); see the module docstring for events.

    Args:
        out: the run folder: final model (``save_pretrained``), ``metrics.jsonl``,
            ``train_config.json``, ``summary.json`` and ``checkpoints/``.
        config: a model preset name (``tiny``, ``small``, ``paper``, ``gpt2``) or a path to a
            ``config.json`` holding a :class:`~steerflow.config.ModelConfig`.
        model: ``hybrid`` (ODE block) or ``baseline`` (the discrete model of the same shape).
        model_overrides: ModelConfig fields to change, e.g. ``{"alpha_init": 0.05}``.
        task: ``lm`` (language-model pretraining), ``expert`` (fine-tune every weight of ``init_from``
            on the SST-2 sentences of one label, ``expert_label``: a DExperts expert),
            ``distill`` (train the ODE block of ``init_from`` so that one pass at u matches a
            contrast teacher, :mod:`steerflow.steer.distill`) or ``steer`` (train the ODE block of the model in
            ``init_from`` on texts labelled with u; see :mod:`steerflow.steer.data`).
        init_from: a checkpoint folder to start from (required for ``task="steer"``).
        steer_data: ``sst2``, ``cloze`` or a ``.jsonl`` file of ``{"text", "u"}`` records.
        steer_axis: the control axis the sentiment label drives when ``control_dim > 1``.
        control_gain: with ``task="steer"`` or ``"distill"``, before the first step set the
            field's control gain g (u enters as ``g·W_u u``) and scale ``W_u`` by ``1/g``: the same
            model, whose u-effect Adam then moves g times faster (None: keep the checkpoint's).
        control_out: with ``task="steer"`` or ``"distill"``, add the mlp field's direct control
            path ``g·W_o u`` (zero-initialised: the same model; ``vector_fields.ControlOut``).
        control_adapter: with ``task="steer"`` or ``"distill"``, add the mlp field's u-gated adapter
            of this rank, ``g·Σ_a u_a B_a σ(A x)`` (B = 0: the same model; 0: none): a
            context-dependent control path, exactly zero at u = 0 (``field_base.ControlAdapter``).
        steer_alpha: with ``task="steer"``, ``frozen`` (default) keeps α at its pretrained value;
            ``trained`` lets Adam move it (measured on ``small``: α then grows by about one
            learning rate per step and the steering run diverges once α ≈ 1).
        steer_alpha_value: with ``task="steer"``, before the first step re-express the ODE block's
            ``α·F`` with α set to this value and F's output layer scaled to match (the same model,
            :meth:`~steerflow.model.ode_block.ODEBlock.reset_alpha_`): Adam moves α·F by about
            α·lr per step, so a pretraining that shrank α learns slowly. ``auto`` (default): α = 1
            for the ``mlp`` field, else keep; ``keep``; ``init`` (``alpha_init``); or a number.
        steer_discriminative: with ``task="steer"``, the weight w of GeDi's discriminative term:
            the loss is ``(1 − w)·LM + w·(−log P(u | x))`` with ``P(u | x) = σ(s·(ℓ(x|u) −
            ℓ(x|−u)))`` from the model's own length-normalised likelihoods and a learned scale s
            (:mod:`steerflow.train.objectives`); 0 (default) is the paper's LM loss, GeDi's own
            mix is :data:`GEDI_WEIGHT`. Doubles the cost of a step (u and −u in one batch).
        steer_anchor: with ``task="steer"``, the weight λ of an anchor term: each step also
            trains on a WikiText-2 batch of the same size at u = 0 and adds λ × its mean LM loss,
            so the model at u = 0 stays the pretrained LM on general text and the steering data's
            domain moves into u instead (0, default: off; the paper trains on the steering data
            alone). Adds one batch to every step.
        train_discrete: with ``task="steer"``, also train the discrete blocks.
        train_final_norm: with ``task="steer"``, also train the final LayerNorm's gain and bias: a
            frozen ``ln_f`` caps the probability any residual stream can give one token
            (``probability_ceiling`` in :mod:`steerflow.steer.sentiment_probe`).
        train_head: with ``task="steer"``/``"distill"``, untie the LM head from the token
            embeddings (a copy: the same model) and train it. A hidden state moves the logits only
            within span(W_head) (d of V directions); on ``small`` 3.9 % of DExperts' mean contrast
            lies there, so the head must learn to read what u writes (:mod:`steerflow.steer.distill`).
        control_only: with ``task="steer"``/``"distill"``, train only the field's zero-initialised
            control paths (the mlp field's ``W_o`` and adapter, the depth-block field's u
            input), so the field at u = 0 stays the pretrained one exactly.
        tokenizer: ``gpt2`` or ``bpe:N``; default ``bpe:<preset vocab>`` for tiny/small and
            ``gpt2`` for paper/gpt2 (with ``init_from``: the checkpoint's tokenizer). The model's
            vocabulary size is set from it.
        data_dir: a local data folder (else ``$STEERFLOW_DATA``, else the Hugging Face Hub).
        cache_dir: prepared-data cache (default ``$STEERFLOW_CACHE`` or ``~/.cache/steerflow``).
        steps: optimizer steps. batch_size: sequences per step, all ranks and micro-batches
            together. block_size: context length (changes the model's ``block_size``).
        lr, min_lr_ratio, warmup_steps: linear warmup to ``lr``, then cosine decay to
            ``lr * min_lr_ratio`` at the last step.
        weight_decay, beta1, beta2: AdamW; no decay on biases, LayerNorms, α and embeddings.
        grad_clip: clip the total gradient norm to this value (0 disables clipping).
        grad_accum: micro-batches per step (``batch_size`` must divide evenly).
        seed: model init, data order and any sampled u.
        eval_interval: validate every N steps (default: 5 times per run). eval_batches: batches
            per periodic validation. test_batches: batches of the final valid/test evaluation
            (None: the whole split). eval_batch_size: default ``batch_size``.
        save_every: checkpoint every N steps (default: 4 times per run, plus the last step);
            keep_checkpoints: how many to keep.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ... dtype: ``float32`` or ``bfloat16``
            (autocast). compile: ``torch.compile`` the model.
        resume: continue the run in ``out`` from its last checkpoint (fresh start if none).
        quiet: no progress bar or log lines.
        lm_u: u during LM pretraining: ``zero`` (paper 1: the control is only trained in the
            steering stage), ``random`` (u ~ U[-1, 1] per sequence, so the field learns to
            tolerate u ≠ 0 before steering) or ``conditional`` (a share ``lm_u_share`` of the
            rows are SST-2 sentences at their label's u, dropped to 0 with probability
            ``lm_u_dropout``: :mod:`steerflow.steer.conditional`).
        expert_label: with ``task="expert"``, the label whose SST-2 sentences the expert learns
            (1 positive, −1 negative).
        distill_teacher: with ``task="distill"``, ``guidance`` (the starting model's own
            z(0) + γ(z(u) − z(−u))), ``dexperts:POS_DIR,NEG_DIR`` (two expert checkpoints) or
            one pair per axis, ``dexperts:P0,N0;P1,N1`` (:mod:`steerflow.train.teacher_spec`).
        distill_alpha: the teacher's strength at |u| = 1 (DExperts' α or guidance's γ).
        distill_on_policy: the share of each batch's rows that are sentence openings continued by
            the teacher (the rest are WikiText-2 windows).
        distill_tokens: how many tokens the teacher adds to each on-policy opening.
        distill_top_p: the teacher on the base's nucleus (tokens outside it probability 0), as
            DExperts samples; None (default): over the whole vocabulary.
        distill_orthogonal: several expert pairs' logit shifts made Fisher-orthogonal in axis
            order (:func:`steerflow.steer.multi_axis.fisher_orthogonalize`).
        vanish_floor, explode_factor, explode_window: gradient-event thresholds (module docstring).
        on_nonfinite: on a NaN/inf loss or gradient, ``skip`` the update (and count it) or
            ``stop`` the run with an error naming the step.
        threads: ``torch.set_num_threads`` for the run (None: leave as is).
        ode_consistency: weight λ of the consistency penalty ``‖H_coarse(1) − H_fine(1)‖ /
            ‖H_fine(1) − H(0)‖`` between the training solve and an rk4 solve (0: off); see
            :mod:`steerflow.train.consistency`. Default (None): :data:`CONTROL_CONSISTENCY` for
            ``steer`` and ``distill``, 0 for the other tasks.
        field_max_norm: after every optimizer step, scale the ODE field's output-layer weight back
            to this Frobenius norm when it is larger (None: off; :mod:`steerflow.train.optim`).
        ode_random_steps: step counts to draw the training solver's steps from at each step
            (empty: the model's fixed ``train_solver``).
    """

    out: str
    config: str = "small"
    model: str = "hybrid"
    model_overrides: dict = field(default_factory=dict)
    task: str = "lm"
    init_from: Optional[str] = None
    steer_data: str = "sst2"
    steer_axis: int = 0
    train_discrete: bool = False
    train_final_norm: bool = False
    steer_alpha: str = "frozen"
    steer_alpha_value: Union[str, float] = "auto"
    control_gain: Optional[float] = None
    control_out: bool = False
    control_adapter: int = 0
    train_head: bool = False
    control_only: bool = False
    steer_discriminative: float = 0.0
    steer_anchor: float = 0.0
    tokenizer: Optional[str] = None
    data_dir: Optional[str] = None
    cache_dir: Optional[str] = None
    steps: Optional[int] = None
    batch_size: Optional[int] = None
    block_size: Optional[int] = None
    lr: Optional[float] = None
    min_lr_ratio: float = 0.1
    warmup_steps: Optional[int] = None
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    grad_accum: int = 1
    seed: int = 1337
    eval_interval: Optional[int] = None
    eval_batches: int = 20
    test_batches: Optional[int] = None
    eval_batch_size: Optional[int] = None
    save_every: Optional[int] = None
    keep_checkpoints: int = 3
    device: str = "auto"
    dtype: str = "float32"
    compile: bool = False
    resume: bool = False
    quiet: bool = False
    lm_u: str = "zero"
    lm_u_share: float = 0.25
    lm_u_dropout: float = 0.1
    expert_label: int = 1
    distill_teacher: Optional[str] = None
    distill_alpha: float = 2.0
    distill_on_policy: float = 0.5
    distill_tokens: int = 20
    distill_top_p: Optional[float] = None
    distill_orthogonal: bool = False
    vanish_floor: float = 1e-6
    explode_factor: float = 10.0
    explode_window: int = 50
    on_nonfinite: str = "skip"
    threads: Optional[int] = None
    ode_consistency: Optional[float] = None
    ode_random_steps: list = field(default_factory=list)
    field_max_norm: Optional[float] = None

    def __post_init__(self) -> None:
        if isinstance(self.out, Path):
            self.out = str(self.out)
        _check_types(self)
        self._check_choices()
        self._fill_defaults()
        self._check_numbers()
        self._check_task()

    # ------------------------------------------------------------------ validation
    def _check_choices(self) -> None:
        if not self.out:
            raise ConfigError("TrainConfig.out is empty; give the run folder (--out DIR)")
        for name, allowed in (("model", MODEL_KINDS), ("task", TASKS), ("dtype", DTYPES),
                              ("on_nonfinite", NONFINITE_ACTIONS), ("lm_u", LM_U_MODES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"TrainConfig.{name}={getattr(self, name)!r} is not one of "
                                  f"{', '.join(allowed)}")
        if self.config not in PRESETS and not Path(self.config).is_file():
            raise ConfigError(f"config {self.config!r} is neither a preset "
                              f"({', '.join(PRESETS)}) nor an existing config.json file")
        names = {f.name for f in dataclasses.fields(ModelConfig)}
        unknown = sorted(set(self.model_overrides) - names)
        if unknown:
            raise ConfigError(f"unknown model override(s) {unknown}; ModelConfig fields are: "
                              f"{', '.join(sorted(names))}")

    def _fill_defaults(self) -> None:
        defaults = TRAIN_DEFAULTS.get(self.config, _GENERIC_DEFAULTS)
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.eval_interval is None:
            self.eval_interval = max(1, self.steps // 5)
        if self.save_every is None:
            self.save_every = max(1, self.steps // 4)
        if self.eval_batch_size is None:
            self.eval_batch_size = self.batch_size
        if self.ode_consistency is None:
            self.ode_consistency = CONTROL_CONSISTENCY if self.task in CONTROL_TASKS else 0.0
        if self.tokenizer is None and self.init_from is None:
            self.tokenizer = default_tokenizer(self.config, self.model_config().vocab_size)

    def _check_numbers(self) -> None:
        positive = ("steps", "batch_size", "grad_accum", "eval_interval", "eval_batches",
                    "eval_batch_size", "save_every", "keep_checkpoints", "explode_window")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("block_size", "test_batches", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"TrainConfig.{name} must be >= 1 or None, got {value}")
        if not (self.ode_consistency >= 0 and math.isfinite(self.ode_consistency)):
            raise ConfigError(f"ode_consistency must be >= 0, got {self.ode_consistency}")
        if self.field_max_norm is not None and not (self.field_max_norm > 0
                                                    and math.isfinite(self.field_max_norm)):
            raise ConfigError(f"field_max_norm must be a finite number > 0 (or None: off), got "
                              f"{self.field_max_norm}")
        if self.field_max_norm is not None and self.model == "baseline":
            raise ConfigError("field_max_norm bounds the ODE block's field; a baseline has none")
        if any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in self.ode_random_steps):
            raise ConfigError(f"ode_random_steps must be step counts >= 1, got {self.ode_random_steps}")
        if self.steer_alpha not in STEER_ALPHA:
            raise ConfigError(f"steer_alpha must be one of {', '.join(STEER_ALPHA)}, got "
                              f"{self.steer_alpha!r}")
        if not 0.0 <= self.steer_discriminative < 1.0:
            raise ConfigError(f"steer_discriminative must be in [0, 1), got "
                              f"{self.steer_discriminative}")
        if not (self.steer_anchor >= 0 and math.isfinite(self.steer_anchor)):
            raise ConfigError(f"steer_anchor must be a finite number >= 0, got {self.steer_anchor}")
        for name in STEER_ONLY:
            if getattr(self, name) and self.task not in CONTROL_TASKS:
                raise ConfigError(f"{name} applies to task='steer' or 'distill' only")
        if self.control_gain is not None and not (
                isinstance(self.control_gain, (int, float)) and not isinstance(self.control_gain, bool)
                and math.isfinite(self.control_gain) and self.control_gain > 0):
            raise ConfigError(f"control_gain must be a positive number, got {self.control_gain!r}")
        for name, ok, rule in (("control_adapter", self.control_adapter >= 0, ">= 0"),
                               ("lm_u_share", 0 <= self.lm_u_share <= 1, "in [0, 1]"),
                               ("lm_u_dropout", 0 <= self.lm_u_dropout <= 1, "in [0, 1]"),
                               ("distill_alpha", self.distill_alpha >= 0, ">= 0"),
                               ("distill_on_policy", 0 <= self.distill_on_policy <= 1, "in [0, 1]")):
            if not (ok and math.isfinite(getattr(self, name))):
                raise ConfigError(f"{name} must be {rule}, got {getattr(self, name)!r}")
        if self.expert_label not in (-1, 1):
            raise ConfigError(f"expert_label must be 1 (positive) or -1 (negative), got "
                              f"{self.expert_label!r}")
        if self.distill_top_p is not None and not 0 < self.distill_top_p <= 1:
            raise ConfigError(f"distill_top_p must be in (0, 1], got {self.distill_top_p!r}")
        if self.distill_tokens < 1:
            raise ConfigError(f"distill_tokens must be >= 1, got {self.distill_tokens}")
        if self.steer_alpha_value not in STEER_ALPHA_VALUES and not (
                isinstance(self.steer_alpha_value, (int, float))
                and not isinstance(self.steer_alpha_value, bool)
                and math.isfinite(self.steer_alpha_value) and self.steer_alpha_value > 0):
            raise ConfigError(f"steer_alpha_value must be one of {', '.join(STEER_ALPHA_VALUES)} or "
                              f"a positive number, got {self.steer_alpha_value!r}")
        if self.warmup_steps < 0 or self.seed < 0 or self.steer_axis < 0:
            raise ConfigError(f"warmup_steps, seed and steer_axis must be >= 0, got "
                              f"{self.warmup_steps}, {self.seed}, {self.steer_axis}")
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"batch_size {self.batch_size} is not divisible by grad_accum "
                              f"{self.grad_accum}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive finite number, got {self.lr}")
        checks = (("min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "in [0, 1]"),
                  ("weight_decay", self.weight_decay >= 0, ">= 0"),
                  ("beta1", 0 <= self.beta1 < 1, "in [0, 1)"),
                  ("beta2", 0 <= self.beta2 < 1, "in [0, 1)"),
                  ("grad_clip", self.grad_clip >= 0, ">= 0 (0 disables clipping)"),
                  ("vanish_floor", self.vanish_floor >= 0, ">= 0"),
                  ("explode_factor", self.explode_factor > 1, "> 1"))
        for name, ok, rule in checks:
            value = getattr(self, name)
            if not (ok and math.isfinite(value)):
                raise ConfigError(f"TrainConfig.{name} must be {rule}, got {value}")

    def _check_task(self) -> None:
        if self.task in FROM_CHECKPOINT and not self.init_from:
            raise ConfigError(f"task {self.task!r} starts from a pretrained model; give the "
                              f"checkpoint with --from CKPT")
        if self.task == "distill":
            if self.distill_teacher is None:
                raise ConfigError("task 'distill' needs a teacher: --teacher guidance or "
                                  "--teacher dexperts:POS_DIR,NEG_DIR")
            check_teacher(self.distill_teacher, self.distill_orthogonal)
        elif self.distill_teacher is not None:
            raise ConfigError("distill_teacher applies to task='distill' only")
        if self.init_from is not None and not Path(self.init_from).is_dir():
            raise ConfigError(f"--from {self.init_from}: no such checkpoint folder")

    # ------------------------------------------------------------------ derived
    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    def model_config(self, vocab_size: Optional[int] = None) -> ModelConfig:
        """The ModelConfig of a fresh model: preset or file, overrides, baseline, vocab, context."""
        base = (ModelConfig.from_name(self.config) if self.config in PRESETS
                else ModelConfig.from_json(self.config))
        changes = dict(self.model_overrides)
        if vocab_size is not None:
            changes["vocab_size"] = vocab_size
        if self.block_size is not None:
            changes["block_size"] = self.block_size
        if self.model == "baseline":
            changes["ode_span"] = None
        return ModelConfig.from_dict({**base.to_dict(), **changes})

    def tokenizer_spec(self) -> str:
        """The tokenizer spec this run uses (explicit, or the preset's default)."""
        return self.tokenizer or default_tokenizer(self.config, self.model_config().vocab_size)

    def cache_path(self) -> Path:
        """The prepared-data cache: ``cache_dir``, ``$STEERFLOW_CACHE``, ``~/.cache/steerflow``."""
        from steerflow.data.cache import resolve_cache_dir

        return resolve_cache_dir(self.cache_dir)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        _check_fields(cls, data)
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "TrainConfig":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: train config not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def lm_task(self) -> "TrainConfig":
        """This config as ``task="lm"``, with the options valid only for steering at their
        defaults (the steer anchor's WikiText-2 batch source is built from it)."""
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.name in STEER_ONLY}
        return self.replace(task="lm", **defaults)

    def resume_mismatch(self, saved: "TrainConfig") -> list[str]:
        """Fields that differ from the run being resumed and would change its trajectory."""
        mine, theirs = self.to_dict(), saved.to_dict()
        return sorted(k for k in mine if k not in RESUME_FREE and mine[k] != theirs.get(k))
