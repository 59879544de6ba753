"""Shared output helpers: atomic file writes, valid JSON, Markdown tables, PNG figures, file
digests and the description of the machine a measurement ran on.

Every file steerflow writes goes through :func:`atomic_write`, so a crash or a full disk leaves the
previous file intact and the error names the file and the cause on one line. This module imports
nothing heavy at import time (torch and matplotlib are imported inside the functions that need
them), so the data layer can use it without loading the model.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, Union

from steerflow.errors import CheckpointError

PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------


def _disk_full(folder: Path) -> bool:
    """Whether ``folder``'s filesystem has no space left for this process."""
    try:
        return os.statvfs(folder).f_bavail == 0
    except (AttributeError, OSError):  # no statvfs on this OS
        return False


def _write_failure(exc: Exception, path: Path) -> Exception:
    """The error a failed write raises. An OSError carries its cause; other writers (torch's and
    safetensors' C++ serialisers) report a full disk as an offset mismatch, so a failure in a
    folder with no space left is reported as what it is. Anything else passes through as it is
    (a bug in the writer is not an I/O error)."""
    if isinstance(exc, CheckpointError):
        return exc
    if isinstance(exc, OSError):
        return CheckpointError(f"cannot write {path}: {exc.strerror or exc}")
    if _disk_full(path.parent):
        return CheckpointError(f"cannot write {path}: {os.strerror(errno.ENOSPC)}")
    return exc


def atomic_write(path: PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` onto ``path`` (same folder, atomic).

    On any failure the temporary file is removed and the previous ``path`` is untouched; the
    error is a :class:`~steerflow.errors.CheckpointError` naming the path and the cause
    (e.g. ``cannot write runs/x/model.safetensors: No space left on device``).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except Exception as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        failure = _write_failure(exc, path)
        if failure is exc:
            raise
        raise failure from exc
    except BaseException:  # KeyboardInterrupt: clean up, then let it through unchanged
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_torch_save(path: PathLike, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically. The object is serialised in memory first, so
    a full disk surfaces as an OSError with its cause, not as torch's C++ offset assertion."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


# --------------------------------------------------------------------------------------------
# JSON and tables
# --------------------------------------------------------------------------------------------


def json_safe(obj: Any) -> Any:
    """``obj`` made valid JSON: NaN and ±inf become ``None`` (JSON has no NaN; ``null`` is what
    readers expect for "not measured"), tuples become lists, numpy scalars and arrays become
    Python numbers and lists, paths become strings, and dict keys become strings."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy scalars / arrays, 0-d tensors
        return json_safe(obj.tolist())
    return obj


def to_json(obj: Any, indent: int = 2) -> str:
    """``obj`` as a JSON document (see :func:`json_safe`), ending in a newline. Objects JSON has
    no form for (a solver spec, a dataclass) are written as their ``str``."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False, default=str) + "\n"


def write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON (:func:`to_json`) to ``path`` atomically."""
    atomic_write_text(path, to_json(obj))


def write_study(out: PathLike, files: Sequence[str], result: Any, table: str,
                plot: Callable[[Any, Path], Any]) -> list[str]:
    """A study's files in ``out``: ``files = (results.json, table, figure)`` — the result as JSON,
    the ``table`` text, and ``plot(result, path)``'s figure; returns the file names."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results, table_name, figure = files
    write_json(out / results, result)
    atomic_write_text(out / table_name, table)
    plot(result, out / figure)
    return list(files)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (readable in a terminal too); floats with 4 significant digits."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: PathLike, dpi: int = 120) -> None:
    """Save ``fig`` as a PNG at ``path`` atomically, then close it."""
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png"))
    finally:
        pyplot().close(fig)


# --------------------------------------------------------------------------------------------
# digests and the machine
# --------------------------------------------------------------------------------------------


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    """Hex SHA-256 of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cpu_model() -> str:
    """The CPU's marketing name (``model name`` in /proc/cpuinfo), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), which can be fewer than the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def load_average() -> list[float]:
    """1-, 5- and 15-minute load averages (empty where the OS does not report them)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return []


def measured_footer(result: dict, reused: str) -> list[str]:
    """A study report's last lines: when and where it was measured (``result["machine"]``, as
    :func:`machine_info` and the torch threads), how long this invocation took (``reused`` says
    what a re-run reuses) and the command."""
    m = result["machine"]
    return [f"Measured {result['date']} on {m['cpu']} ({m['cores']} cores"
            f"{', GPU ' + m['gpu'] if m.get('gpu') else ''}), torch {m['torch']}, torch threads: "
            f"{m.get('torch_threads') or 'default'}; {result['elapsed_s'] / 60:.1f} min for this "
            f"invocation ({reused} cost nothing).",
            f"Command: `{result['command']}`", ""]


def machine_info(device: str = "cpu") -> dict:
    """A JSON-ready description of the machine and the torch build a measurement ran on."""
    import torch

    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 1,
        "usable_cores": usable_cores(),
        "load_average": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "device_name": cpu_model(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        info["device_name"] = torch.cuda.get_device_name(index)
        info["cuda"] = torch.version.cuda
    return info


def describe_machine(info: dict) -> str:
    """One line for people: ``AMD EPYC | 2/2 cores (load 0.70) | torch 2.13.0 | device cpu | 2 threads``."""
    load = info.get("load_average") or []
    load_text = f" (load {load[0]:.2f})" if load else ""
    return (f"{info['device_name']} | {info['usable_cores']}/{info['cores']} cores{load_text} | "
            f"torch {info['torch']} | device {info['device']} | {info['torch_threads']} threads")
