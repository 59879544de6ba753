"""Export to `transformers`: a discrete model round-trips as a plain ``GPT2LMHeadModel`` (same
logits, ``pipeline`` runs), a hybrid loads with ``trust_remote_code`` (same logits, ``generate``
steers with ``u``); the CLI writes the same folders and refuses bad input in one line."""

from __future__ import annotations

import json

import pytest
import torch

from steerflow.config import ModelConfig
from steerflow.errors import ConfigError
from steerflow.model.gpt import SteerFlowGPT

from .conftest import VOCAB

EXACT = dict(rtol=0.0, atol=1e-5)  # float32, as in test_convert.py


def _tokens(seed: int = 0, batch: int = 2, length: int = 24) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _liven_control(model: SteerFlowGPT, seed: int = 0) -> None:
    """u's weights as after steering training (they start at zero, where u does nothing)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight = model.ode.field.u_in.linear.weight
        weight.copy_(torch.randn(weight.shape, generator=gen))


def test_converted_gpt2_exports_back_to_the_same_transformers_model(gpt2_source, converted,
                                                                   tmp_path):
    from transformers import AutoModelForCausalLM, pipeline

    SteerFlowGPT.from_pretrained(converted["discrete"]).save_pretrained(
        tmp_path / "out", format="transformers")
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert type(back).__name__ == "GPT2LMHeadModel"
    idx = _tokens()
    with torch.no_grad():
        torch.testing.assert_close(back(idx).logits, gpt2_source.model(idx).logits, **EXACT)
    generator = pipeline("text-generation", model=str(tmp_path / "out"))
    text = generator("The movie was", max_new_tokens=4, do_sample=False)[0]["generated_text"]
    assert text.startswith("The movie was") and len(text) > len("The movie was")


@pytest.mark.parametrize("options", [dict(), dict(bias=False, tie_weights=True)])
def test_a_steerflow_trained_discrete_model_round_trips(tmp_path, options):
    """steerflow's own baselines (exact GELU, untied head by default; also without biases,
    exported as zero biases) are GPT-2s too."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = SteerFlowGPT(ModelConfig.from_name("tiny", ode_span=None, vocab_size=VOCAB, **options))
    model.eval().save_pretrained(tmp_path, format="transformers")
    back = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    idx = _tokens(1)
    with torch.no_grad():
        torch.testing.assert_close(back(idx).logits, model(idx)[0], **EXACT)


def test_a_hybrid_loads_with_trust_remote_code_and_generate_steers(converted, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = SteerFlowGPT.from_pretrained(converted["hybrid"])
    _liven_control(model)
    model.save_pretrained(tmp_path, format="transformers")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_steerflow.SteerFlowForCausalLM"
    assert (tmp_path / "modeling_steerflow.py").is_file()
    assert not list(tmp_path.glob("*.bin"))  # weights stay safetensors
    remote = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True).eval()
    idx = _tokens(2)
    with torch.no_grad():
        for u in (0.0, 0.7, -1.5):
            torch.testing.assert_close(remote(idx, u=u).logits, model(idx, u)[0], **EXACT)
        assert (remote(idx, u=1.0).logits - remote(idx, u=-1.0).logits).abs().max() > 1e-2
    prompt = AutoTokenizer.from_pretrained(tmp_path)("The movie was", return_tensors="pt")
    for u in (1.0, -1.0):
        out = remote.generate(prompt["input_ids"], u=u, max_new_tokens=5, do_sample=False)
        ours = model.generate(prompt["input_ids"], u, 5, greedy=True)
        assert torch.equal(out, ours)


def test_export_cli_writes_the_transformers_folder(converted, tmp_path, cli):
    from transformers import AutoModelForCausalLM

    result = cli("export", converted["discrete"], "--to", "transformers", "--out", tmp_path, "--json")
    assert result.code == 0, result.err
    info = json.loads(result.out)
    assert info["architecture"] == "GPT2LMHeadModel" and "tokenizer.json" in info["files"]
    AutoModelForCausalLM.from_pretrained(tmp_path)


def test_unknown_format_and_bad_export_input_are_one_line_errors(converted, tmp_path, cli):
    model = SteerFlowGPT.from_pretrained(converted["discrete"])
    with pytest.raises(ConfigError, match="unknown checkpoint format 'onnx'"):
        model.save_pretrained(tmp_path / "x", format="onnx")
    (tmp_path / "a_file").write_text("not a folder\n")
    for args, needle in (
        ([tmp_path / "absent", "--to", "transformers", "--out", tmp_path / "o"], "no such checkpoint"),
        ([converted["discrete"], "--to", "onnx", "--out", tmp_path / "o"], "invalid choice"),
        ([converted["discrete"], "--to", "transformers", "--out", tmp_path / "a_file"], "is a file"),
        ([converted["discrete"], "--to", "transformers"], "required"),
    ):
        result = cli("export", *args)
        lines = result.err.strip().splitlines()
        assert result.code == 2 and needle in lines[-1] and "Traceback" not in result.err, result.err
