"""``steerflow.io``: the one home of shared writes. JSON is always valid (NaN -> null), a failed
write leaves the old file and says which file and why, digests match hashlib."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from steerflow import io as sio
from steerflow.errors import CheckpointError


def _strict_loads(text: str):
    """``json.loads`` that refuses NaN / Infinity (which Python's json accepts, JSON does not)."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_json_safe_turns_non_finite_numbers_into_null_and_keeps_the_rest():
    value = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "x": 1.5, "n": 3, "b": True,
             "t": (1, 2), 4: "int key", "np": np.float32(0.25), "arr": np.array([1.0, np.nan]),
             "tensor": torch.tensor(2.0), "path": Path("a/b")}
    safe = sio.json_safe(value)
    assert safe == {"nan": None, "inf": None, "-inf": None, "x": 1.5, "n": 3, "b": True,
                    "t": [1, 2], "4": "int key", "np": 0.25, "arr": [1.0, None], "tensor": 2.0,
                    "path": "a/b"}
    assert _strict_loads(sio.to_json(value)) == safe


def test_to_json_writes_objects_without_a_json_form_as_their_str():
    class Spec:
        def __str__(self):
            return "euler:4"
    assert _strict_loads(sio.to_json({"solver": Spec()})) == {"solver": "euler:4"}


def test_write_json_is_atomic_and_valid(tmp_path):
    path = tmp_path / "sub" / "r.json"
    sio.write_json(path, {"loss": float("nan")})
    assert _strict_loads(path.read_text()) == {"loss": None}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary left


def test_failed_write_keeps_the_old_file_and_names_path_and_cause(tmp_path):
    path = tmp_path / "f.txt"
    sio.atomic_write_text(path, "old")

    def disk_full(tmp):
        Path(tmp).write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(CheckpointError) as info:
        sio.atomic_write(path, disk_full)
    assert str(info.value) == f"cannot write {path}: No space left on device"
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_a_serialiser_error_in_a_full_folder_is_reported_as_a_full_disk(tmp_path, monkeypatch):
    """torch's and safetensors' C++ writers report ENOSPC as an offset mismatch (a RuntimeError):
    when the folder has no space left, the error says so; elsewhere the error passes through."""
    def torch_like(tmp):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 225088")

    monkeypatch.setattr(sio, "_disk_full", lambda folder: True)
    with pytest.raises(CheckpointError, match="No space left on device"):
        sio.atomic_write(tmp_path / "state.pt", torch_like)
    monkeypatch.setattr(sio, "_disk_full", lambda folder: False)
    with pytest.raises(RuntimeError, match="unexpected pos"):
        sio.atomic_write(tmp_path / "state.pt", torch_like)


def test_atomic_torch_save_round_trips(tmp_path):
    state = {"step": 3, "w": torch.arange(6.0).reshape(2, 3)}
    sio.atomic_torch_save(tmp_path / "s.pt", state)
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)
    assert loaded["step"] == 3 and torch.equal(loaded["w"], state["w"])


def test_digests_match_hashlib(tmp_path):
    data = os.urandom(3 * 2**20 + 17)  # more than one 1 MiB block
    (tmp_path / "b").write_bytes(data)
    assert sio.sha256_file(tmp_path / "b") == hashlib.sha256(data).hexdigest()
    assert sio.sha256_text("héllo") == hashlib.sha256("héllo".encode()).hexdigest()


def test_format_table():
    assert sio.format_table(["a", "b"], [[1, 0.123456], ["x", 2.0]]) == (
        "| a | b |\n|---|---|\n| 1 | 0.1235 |\n| x | 2 |")


def test_machine_info_is_json_and_describable():
    info = sio.machine_info()
    assert _strict_loads(sio.to_json(info)) == sio.json_safe(info)
    assert info["torch"] == torch.__version__ and info["torch_threads"] == torch.get_num_threads()
    assert f"torch {torch.__version__}" in sio.describe_machine(info)
