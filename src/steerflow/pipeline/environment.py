"""Where an end-to-end run happens — data, cache, device, threads — and the helpers every stage
shares to reach them (:mod:`steerflow.pipeline.demo`, :mod:`steerflow.pipeline.steering`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class Environment:
    """Where data comes from and where the run happens (not part of the stage fingerprint)."""

    data_dir: Optional[str] = None
    cache_dir: Optional[str] = None
    device: str = "auto"
    threads: Optional[int] = None
    quiet: bool = False


def data_source(env: Environment):
    """The run's data source (``--data-dir`` / ``$STEERFLOW_DATA`` / the Hub)."""
    from steerflow.data import resolve_data_source

    return resolve_data_source(env.data_dir)


def device(env: Environment) -> str:
    """``env.device``, with ``auto`` resolved to ``cuda`` when available, else ``cpu``."""
    if env.device != "auto":
        return env.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cache_dir(env: Environment) -> Path:
    """The prepared-data cache folder (``--cache-dir`` / ``$STEERFLOW_CACHE`` / the default)."""
    from steerflow.data.cache import resolve_cache_dir

    return resolve_cache_dir(env.cache_dir)


def train_config(settings, env: Environment, **kw):
    """A :class:`~steerflow.train.config.TrainConfig` in this environment with the run's seed."""
    from steerflow.train.config import TrainConfig

    return TrainConfig(config=settings.config, data_dir=env.data_dir, cache_dir=env.cache_dir,
                       device=env.device, threads=env.threads, quiet=env.quiet,
                       seed=settings.seed, **kw)


def load(run_dir: Path, rel: str, env: Environment):
    """The checkpoint at ``run_dir / rel`` on the run's device."""
    from steerflow.model.hub import load_model

    return load_model(Path(run_dir) / rel, device(env))


def train_to_completion(cfg) -> dict:
    """Run ``steerflow train`` with ``cfg``; its summary. An interrupted run saved its state, so
    the stage stops (``KeyboardInterrupt``) and re-running the pipeline resumes it."""
    from steerflow.train.loop import train

    summary = train(cfg).summary()
    if not summary.get("completed"):
        raise KeyboardInterrupt
    return summary


def check_names(names, valid, flag: str, noun: str, empty_hint: str) -> None:
    """Refuse an empty ``names`` list (``empty_hint`` says what to name), names not in ``valid``
    (``unknown <noun>(s) ...``) and repeats, each with a ConfigError naming ``flag``."""
    from steerflow.errors import ConfigError

    if not names:
        raise ConfigError(f"{flag} is empty; {empty_hint}")
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ConfigError(f"unknown {noun}(s) {', '.join(unknown)} in {flag}; the choices are "
                          f"{', '.join(valid)}")
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise ConfigError(f"{flag} names {', '.join(repeated)} more than once; name each once")
