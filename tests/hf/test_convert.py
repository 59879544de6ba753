"""``convert hf``: a `transformers` GPT-2 becomes a steerflow model with the same logits —
discrete, or with layers as a depth-block ODE block under its Euler solve — whose u does nothing
until one steering step, with its tokenizer; bad sources are one-line errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from steerflow.config import SolverSpec
from steerflow.hf.convert import convert_hf
from steerflow.model.gpt import SteerFlowGPT

from .conftest import VOCAB, save_gpt2

# float32, 4 layers of d = 64 with O(1) logits: steerflow and transformers sum in different
# orders (sdpa vs eager attention, fused vs separate bias adds), ~1e-6 apart; 1e-5 is the issue's
EXACT = dict(rtol=0.0, atol=1e-5)


def _tokens(seed: int = 0, batch: int = 3, length: int = 32) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _hf_logits(source, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return source.model(idx).logits


def test_discrete_conversion_has_the_logits_of_transformers(gpt2_source, converted):
    idx = _tokens()
    ours = SteerFlowGPT.from_pretrained(converted["discrete"])
    assert ours.config.ode_span is None and ours.config.tie_weights
    theirs = _hf_logits(gpt2_source, idx)
    assert theirs.abs().max() > 1.0  # lively weights: a wrong detail would show
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], theirs, **EXACT)
        # the tolerance has teeth: GPT-2's tanh GELU replaced by the exact one misses it
        ours.apply(lambda m: setattr(m, "approximate", "none") if hasattr(m, "approximate") else None)
        assert (ours(idx)[0] - theirs).abs().max() > 1e-3


@pytest.mark.parametrize("span", [(1, 3), (0, 4)])
def test_hybrid_conversion_is_exact_under_euler_and_smooth_under_dopri5(gpt2_source, span):
    model = convert_hf(str(gpt2_source.folder), span).model
    start, end = span
    assert model.config.field == "depth-block" and model.config.eval_solver.steps == end - start
    idx = _tokens(1)
    theirs = _hf_logits(gpt2_source, idx)
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], theirs, **EXACT)  # its own Euler solve
        adaptive, _ = model(idx, solver=SolverSpec.parse("dopri5:1e-4"))
    # the adaptive solver integrates the smooth field between the layers: another model
    assert bool(torch.isfinite(adaptive).all())
    assert (adaptive - theirs).abs().max() > 1e-2
    assert model.ode.last_stats.nfe_forward > end - start


def test_u_does_nothing_after_conversion_and_moves_logits_after_one_steering_step(
        converted, tmp_path, data_dir):  # the steering step reads SST-2: skipped without the data
    from steerflow.train import TrainConfig, train

    idx = _tokens(2, batch=2, length=16)
    model = SteerFlowGPT.from_pretrained(converted["hybrid"])
    with torch.no_grad():
        # u's weights start at zero: any u gives exactly the u = 0 logits
        assert torch.equal(model(idx, u=3.0)[0], model(idx, u=-3.0)[0])
    out = tmp_path / "steered"
    train(TrainConfig(out=str(out), config="tiny", task="steer", init_from=str(converted["hybrid"]),
                      steer_data="cloze", steps=1, batch_size=4, lr=1e-2, warmup_steps=0,
                      eval_interval=1, eval_batches=1, test_batches=1, save_every=1, quiet=True,
                      seed=0, threads=1))
    steered = SteerFlowGPT.from_pretrained(out)
    with torch.no_grad():
        moved = (steered(idx, u=1.0)[0] - steered(idx, u=-1.0)[0]).abs().max()
    # one Adam step moves each of u's weights by lr = 1e-2 (measured: logits move by 0.25)
    assert moved > 1e-2


def test_the_tokenizer_comes_along_and_generate_runs(gpt2_source, converted, cli):
    from transformers import AutoTokenizer

    ours = SteerFlowGPT.from_pretrained(converted["hybrid"]).tokenizer
    theirs = AutoTokenizer.from_pretrained(gpt2_source.folder)
    text = "The movie was good . The film was bad ."
    assert ours.encode(text) == theirs(text)["input_ids"]
    result = cli("generate", converted["hybrid"], "--prompt", "The movie was", "--u", "1",
                 "--max-new-tokens", "4", "--greedy", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out.splitlines()[0])["prompt"] == "The movie was"


def test_gpt2s_own_tokenizer_converts_from_vocab_and_merges(tmp_path, cli):
    """GPT-2's real BPE (the shared data's encoder.json and vocab.bpe) as a transformers
    tokenizer: the converted checkpoint encodes as transformers does."""
    import os

    from transformers import GPT2Tokenizer

    data = os.environ.get("STEERFLOW_DATA")
    files = None if data is None else (os.path.join(data, "gpt2-tokenizer", "encoder.json"),
                                       os.path.join(data, "gpt2-tokenizer", "vocab.bpe"))
    if files is None or not all(os.path.isfile(f) for f in files):
        pytest.skip("GPT-2's tokenizer files are not in $STEERFLOW_DATA")
    vocab = json.loads(open(files[0], encoding="utf-8").read())
    merges = [tuple(line.split(" ")) for line in
              open(files[1], encoding="utf-8").read().split("\n")[1:] if line]
    hf_tok = GPT2Tokenizer(vocab=vocab, merges=merges)
    save_gpt2(tmp_path / "src", hf_tok, vocab_size=50257, n_layer=2, n_embd=32,
              bos_token_id=50256, eos_token_id=50256)
    # a folder with only vocab.json + merges.txt (older transformers) converts the same way
    shutil.copy(files[0], tmp_path / "src" / "vocab.json")
    shutil.copy(files[1], tmp_path / "src" / "merges.txt")
    (tmp_path / "src" / "tokenizer.json").unlink()
    result = cli("convert", "hf", tmp_path / "src", "--out", tmp_path / "out", "--quiet", "--json")
    assert result.code == 0, result.err
    ours = SteerFlowGPT.from_pretrained(tmp_path / "out").tokenizer
    text = "Hello world, the film's plot was 42% better than expected!"
    assert ours.encode(text) == hf_tok(text)["input_ids"]
    assert ours.eos_id == 50256


# ------------------------------------------------------------------------ bad sources
def _gpt2_variant(tmp_path, gpt2_source, name: str, edit=None, drop=(), tokenizer=None,
                  extra=None):
    """A copy of the saved GPT-2 with files dropped, config keys changed, another tokenizer.json
    or extra files."""
    folder = tmp_path / name
    shutil.copytree(gpt2_source.folder, folder)
    for file in drop:
        (folder / file).unlink()
    for file, content in (extra or {}).items():
        (folder / file).write_bytes(content)
    if edit:
        config = json.loads((folder / "config.json").read_text())
        config.update(edit)
        (folder / "config.json").write_text(json.dumps(config))
    if tokenizer is not None:
        (folder / "tokenizer.json").write_text(tokenizer)
    return folder


def _bad_cases(tmp_path, gpt2_source):
    from steerflow.data.tokenizer import train_bpe

    small = train_bpe(["the movie was good", "the film was bad"] * 20, 300).to_json()
    return [
        ([_gpt2_variant(tmp_path, gpt2_source, "c1", drop=["config.json"])], "config.json: missing"),
        ([_gpt2_variant(tmp_path, gpt2_source, "c2", edit={"model_type": "llama", "architectures":
                                                           ["LlamaForCausalLM"]})],
         "LlamaForCausalLM is not supported; steerflow converts GPT2LMHeadModel"),
        ([gpt2_source.folder, "--ode-span", "2:9"], "ode_span=(2, 9) must satisfy"),
        ([gpt2_source.folder, "--ode-span", "3:3"], "ode_span=(3, 3) must satisfy"),
        ([gpt2_source.folder, "--ode-span", "4-8"], "expected START:END"),
        ([_gpt2_variant(tmp_path, gpt2_source, "c3", tokenizer=small)],
         f"but the model's vocab_size is {VOCAB}"),
        ([_gpt2_variant(tmp_path, gpt2_source, "c4", edit={"activation_function": "relu"})],
         "activation_function='relu'"),
        ([_gpt2_variant(tmp_path, gpt2_source, "c5", drop=["model.safetensors"],
                        extra={"pytorch_model.bin": b"a pickle"})],
         "pytorch_model.bin, which steerflow refuses to load"),
        ([tmp_path / "absent"], "no such folder"),
    ]


def test_bad_sources_are_one_line_errors_with_exit_code_2(tmp_path, gpt2_source, cli):
    for args, needle in _bad_cases(tmp_path, gpt2_source):
        result = cli("convert", "hf", *args, "--out", tmp_path / "out")
        lines = result.err.strip().splitlines()
        assert result.code == 2 and len(lines) == 1, (args, result.err)
        assert needle in lines[0] and "Traceback" not in result.err, (needle, lines[0])
        assert result.out == ""
    assert not (tmp_path / "out" / "config.json").exists()
