"""Where prepared data lives between runs: the token cache folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def default_cache_dir() -> Path:
    """The token cache folder: ``$STEERFLOW_CACHE``, else ``~/.cache/steerflow``."""
    env = os.environ.get("STEERFLOW_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "steerflow"


def resolve_cache_dir(cache_dir: Optional[str | os.PathLike] = None) -> Path:
    """``cache_dir`` when given, else :func:`default_cache_dir`."""
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
