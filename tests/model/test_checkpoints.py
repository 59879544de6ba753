"""Checkpoints: bit-exact round trips, and every broken or unsafe folder refused with a
CheckpointError that names the file — pickles are never unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from steerflow.errors import CheckpointError, SteerflowError
from steerflow.model.gpt import SteerFlowGPT
from steerflow.model.hub import CONFIG_NAME, WEIGHTS_NAME, atomic_write, atomic_write_text, read_config

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def saved(make_tiny_model, tmp_path) -> tuple[SteerFlowGPT, Path]:
    model = make_tiny_model(field="block", control_dim=2, alpha_shape="channel")
    model.save_pretrained(tmp_path / "ckpt")
    return model, tmp_path / "ckpt"


def _edit_config(folder: Path, **changes) -> None:
    data = json.loads((folder / CONFIG_NAME).read_text())
    data.update(changes)
    (folder / CONFIG_NAME).write_text(json.dumps(data))


def test_round_trip_is_bit_exact(saved):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    loaded = SteerFlowGPT.from_pretrained(folder)
    assert not loaded.training
    assert loaded.config == model.config
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for name in original:
        assert torch.equal(original[name], restored[name]), name
    idx = torch.randint(0, 512, (2, 11))
    u = torch.tensor([[1.0, -1.0], [0.5, 2.0]])
    assert torch.equal(model(idx, u=u)[0], loaded(idx, u=u)[0])


def test_tied_weights_round_trip(make_tiny_model, tmp_path):
    model = make_tiny_model(tie_weights=True)
    model.save_pretrained(tmp_path)
    loaded = SteerFlowGPT.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.wte.weight  # still one tensor, not two copies
    assert torch.equal(loaded.wte.weight, model.wte.weight)
    idx = torch.randint(0, 512, (1, 9))
    assert torch.equal(loaded(idx)[0], model(idx)[0])
    assert loaded.num_params() == model.num_params()


def test_tokenizer_is_saved_and_loaded_with_the_model(make_tiny_model, tmp_path):
    from steerflow.data.tokenizer import train_bpe

    tokenizer = train_bpe(["the movie was good", "the film was bad", "a great plot"] * 10, 300)
    model = make_tiny_model()
    model.save_pretrained(tmp_path, tokenizer=tokenizer)
    loaded = SteerFlowGPT.from_pretrained(tmp_path)
    assert loaded.tokenizer is not None
    assert loaded.tokenizer.content_hash() == tokenizer.content_hash()
    assert loaded.tokenizer.encode("the movie was bad") == tokenizer.encode("the movie was bad")


def test_truncated_weights_are_a_checkpoint_error_naming_the_file(saved):
    _, folder = saved
    raw = (folder / WEIGHTS_NAME).read_bytes()
    for length in (len(raw) // 2, len(raw) - 1, 5, 0):
        (folder / WEIGHTS_NAME).write_bytes(raw[:length])
        with pytest.raises(CheckpointError, match=rf"{WEIGHTS_NAME}: unreadable or truncated"):
            SteerFlowGPT.from_pretrained(folder)


def test_config_that_does_not_match_the_weights_is_refused(saved):
    _, folder = saved
    _edit_config(folder, n_embd=64)  # still a valid config (2 heads divide 64)
    with pytest.raises(CheckpointError, match=rf"{WEIGHTS_NAME}: weights do not match {CONFIG_NAME}"):
        SteerFlowGPT.from_pretrained(folder)
    _edit_config(folder, n_embd=32, ode_span=None)  # same shapes, different set of tensors
    with pytest.raises(CheckpointError, match=r"weights do not match config.json \(missing"):
        SteerFlowGPT.from_pretrained(folder)


@pytest.mark.parametrize("changes, fragment", [
    ({"n_layers": 4}, r"unknown ModelConfig key\(s\) \['n_layers'\]"),
    ({"n_layer": "4"}, "ModelConfig.n_layer must be"),
    ({"alpha_init": -1.0}, "alpha_init"),
    ({"model_type": "gpt2"}, "model_type is 'gpt2'"),
    ({"format_version": 99}, "checkpoint format version 99"),
])
def test_bad_config_json_is_a_checkpoint_error_naming_the_file(saved, changes, fragment):
    _, folder = saved
    _edit_config(folder, **changes)
    with pytest.raises(CheckpointError, match=rf"{CONFIG_NAME}: .*{fragment}"):
        SteerFlowGPT.from_pretrained(folder)


def test_unreadable_config_json_and_missing_files(saved, tmp_path):
    _, folder = saved
    (folder / CONFIG_NAME).write_text("{truncated")
    with pytest.raises(CheckpointError, match=rf"{CONFIG_NAME}: not valid JSON"):
        read_config(folder)
    (folder / CONFIG_NAME).write_text("[1, 2]")  # valid JSON, but not an object
    with pytest.raises(CheckpointError, match=rf"{CONFIG_NAME}: expected a JSON object, got list"):
        read_config(folder)
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        SteerFlowGPT.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=rf"{CONFIG_NAME}: missing"):
        SteerFlowGPT.from_pretrained(tmp_path / "empty")


class _Payload:
    """Unpickling this object opens (creates) the marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_checkpoints_are_refused_without_being_unpickled(saved, tmp_path):
    _, good = saved
    marker = tmp_path / "unpickled.marker"
    evil = tmp_path / "evil.bin"
    torch.save({"wte.weight": _Payload(marker)}, evil)  # a torch pickle, as pytorch_model.bin is

    only_pickle = tmp_path / "only_pickle"  # no config.json, no safetensors
    only_pickle.mkdir()
    (only_pickle / "pytorch_model.bin").write_bytes(evil.read_bytes())
    with pytest.raises(CheckpointError, match="found pytorch_model.bin, a pickle file"):
        SteerFlowGPT.from_pretrained(only_pickle)

    beside_config = tmp_path / "beside_config"  # a valid config.json, but weights only as pickle
    beside_config.mkdir()
    (beside_config / CONFIG_NAME).write_text((good / CONFIG_NAME).read_text())
    (beside_config / "pytorch_model.bin").write_bytes(evil.read_bytes())
    with pytest.raises(CheckpointError, match=rf"{WEIGHTS_NAME}: missing"):
        SteerFlowGPT.from_pretrained(beside_config)

    renamed = tmp_path / "renamed"  # the pickle disguised as model.safetensors
    renamed.mkdir()
    (renamed / CONFIG_NAME).write_text((good / CONFIG_NAME).read_text())
    (renamed / WEIGHTS_NAME).write_bytes(evil.read_bytes())
    with pytest.raises(CheckpointError, match=rf"{WEIGHTS_NAME}: unreadable"):
        SteerFlowGPT.from_pretrained(renamed)

    with pytest.raises(CheckpointError, match="not a folder"):
        SteerFlowGPT.from_pretrained(evil)  # the pickle file itself given as the checkpoint

    assert not marker.exists()
    # control: the payload is live — unpickling it the unsafe way does create the marker
    torch.load(evil, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_and_the_old_checkpoint_survives(saved, bad):
    model, folder = saved
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with torch.no_grad():
        model.ode.field.fc_out.weight[0, 0] = bad
    with pytest.raises(CheckpointError, match=r"non-finite weights \(ode.field.fc_out.weight\)"):
        model.save_pretrained(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_text(path, "old")

    def failing_write(tmp: str) -> None:
        Path(tmp).write_text("half written")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, failing_write)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left
    atomic_write_text(path, "new")
    assert path.read_text() == "new"


def test_checkpoint_errors_are_value_errors_with_one_line_messages(saved):
    _, folder = saved
    (folder / WEIGHTS_NAME).write_bytes(b"garbage")
    with pytest.raises(CheckpointError) as info:
        SteerFlowGPT.from_pretrained(folder)
    assert isinstance(info.value, (ValueError, SteerflowError))
    assert "\n" not in str(info.value)
