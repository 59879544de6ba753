"""Shared test setup.

Tests that need the real data read it from ``$STEERFLOW_DATA``. When it is unset and a
``shared/data`` folder lies beside the repository (the layout CI uses), point it there.
"""

import os
from pathlib import Path

_beside = Path(__file__).resolve().parents[2] / "shared" / "data"
if "STEERFLOW_DATA" not in os.environ and _beside.is_dir():
    os.environ["STEERFLOW_DATA"] = str(_beside)

os.environ.setdefault("MPLBACKEND", "Agg")
