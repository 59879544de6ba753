"""What ``steerflow bench`` runs and at which shapes: :class:`BenchOptions` (no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from steerflow.config import PRESETS, ModelConfig
from steerflow.errors import ConfigError

#: the benchmarks of the hybrid against its own baseline, in the order they run
BENCHMARKS = ("latency", "generate", "train", "memory", "mfu", "solver")
#: the benchmarks against what a user would pick instead (``--peers``): ``transformers``' GPT-2,
#: the steering methods beside single-pass ODE steering, and the command line's start-up
PEER_BENCHMARKS = ("peers", "steer_speed", "startup")
ALL_BENCHMARKS = BENCHMARKS + PEER_BENCHMARKS


@dataclass
class BenchOptions:
    """What to run and at which shapes. :meth:`quick` gives the CI smoke-test settings."""

    config: str = "paper"
    batch_size: int = 8
    seq_len: Optional[int] = None          # default: min(128, block_size)
    reps: int = 7
    warmup: int = 2
    train_reps: int = 5
    gen_batch: Optional[int] = None        # default: batch_size
    gen_prompt: int = 16
    gen_tokens: int = 64
    gen_reps: int = 9
    memory_steps: tuple[int, int] = (4, 64)
    memory_model_scope: bool = True        # also measure whole-model training steps
    matmul_size: int = 4096
    device: str = "cpu"
    threads: Optional[int] = None
    clock: str = "wall"
    malloc: str = "reuse"                  # "reuse": keep freed memory in the heap (runtime.py)
    seed: int = 0
    only: tuple[str, ...] = BENCHMARKS
    peer_gen_tokens: int = 128             # new tokens per generation against transformers
    peer_gen_batches: tuple[int, ...] = (1, 8)
    peer_reps: int = 5                     # rounds of the peer and steering comparisons
    startup_reps: int = 5                  # fresh processes per start-up command
    profile: bool = False                  # also record torch.profiler top operators
    compile: bool = False                  # also time torch.compile-d forward passes
    quick: bool = False

    def __post_init__(self) -> None:
        if self.config not in PRESETS:
            raise ConfigError(f"unknown config {self.config!r}; presets are {', '.join(PRESETS)}")
        unknown = sorted(set(self.only) - set(ALL_BENCHMARKS))
        if unknown:
            raise ConfigError(f"unknown benchmark(s) {unknown}; choose from "
                              f"{', '.join(ALL_BENCHMARKS)}")
        if self.gen_batch is None:
            self.gen_batch = self.batch_size
        for name in ("batch_size", "reps", "train_reps", "gen_batch", "gen_prompt", "gen_tokens",
                     "gen_reps", "matmul_size", "peer_gen_tokens", "peer_reps", "startup_reps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"bench option {name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ConfigError(f"warmup must be >= 0, got {self.warmup}")
        if self.malloc not in ("reuse", "system"):
            raise ConfigError(f"malloc must be 'reuse' or 'system', got {self.malloc!r}")
        if self.clock not in ("wall", "cpu"):
            raise ConfigError(f"clock must be 'wall' or 'cpu', got {self.clock!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if not self.peer_gen_batches or min(self.peer_gen_batches) < 1:
            raise ConfigError(f"peer_gen_batches must be batch sizes >= 1, got "
                              f"{self.peer_gen_batches}")
        lo, hi = self.memory_steps
        if not 1 <= lo < hi:
            raise ConfigError(f"memory_steps must be two step counts 1 <= a < b, got {self.memory_steps}")

    @classmethod
    def quick_options(cls, **overrides) -> "BenchOptions":
        """The ``--quick`` settings: ``tiny`` config, few repetitions (well under a minute)."""
        # one thread: the tiny model is overhead-bound, and on a shared machine a second OpenMP
        # thread mostly waits at barriers for a descheduled sibling; the system allocator: tiny
        # tensors stay below glibc's mmap threshold anyway, and the caller's process (e.g. a test
        # session) keeps its allocator settings
        values = dict(config="tiny", reps=5, warmup=1, train_reps=3, gen_prompt=8, gen_tokens=16,
                      gen_reps=3, matmul_size=512, memory_model_scope=False, threads=1,
                      malloc="system", peer_gen_tokens=16, peer_reps=3, startup_reps=2,
                      quick=True)
        values.update(overrides)
        return cls(**values)

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_name(self.config)

    def resolved_seq_len(self, config: ModelConfig) -> int:
        T = self.seq_len if self.seq_len is not None else min(128, config.block_size)
        if not 1 <= T <= config.block_size:
            raise ConfigError(f"seq_len must be in [1, {config.block_size}] for config "
                              f"{self.config!r}, got {T}")
        return T
