"""``analyze flow --hf``: Hugging Face causal LMs read as residual stacks, offline — small randomly
initialised ``transformers`` models built from configs and saved with ``save_pretrained``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from steerflow.analysis.discrete import branch_log_norms
from steerflow.analysis.lognorm import dense_log_norm
from steerflow.cli.main import main

from flow_helpers import EXACT

transformers = pytest.importorskip("transformers")

VOCAB, POSITIONS = 97, 32


def tiny_config(arch: str, d: int, layers: int):
    """A small config of a supported architecture (two heads; Llama-style ones with grouped
    key/value heads, RMSNorm, rotary positions and a gated MLP)."""
    common = dict(vocab_size=VOCAB, bos_token_id=0, eos_token_id=0)
    if arch == "gpt2":
        return transformers.GPT2Config(n_layer=layers, n_embd=d, n_head=2, n_positions=POSITIONS,
                                       **common)
    config_class = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
                    "qwen2": transformers.Qwen2Config}[arch]
    return config_class(num_hidden_layers=layers, hidden_size=d, intermediate_size=2 * d,
                        num_attention_heads=2, num_key_value_heads=1,
                        max_position_embeddings=POSITIONS, **common)


def save_model(folder: Path, arch: str, d: int = 64, layers: int = 4, scale: float = 0.0) -> Path:
    """A random model saved by transformers; ``scale`` adds noise to every weight so that the
    branches are far from the small-init regime."""
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(tiny_config(arch, d, layers))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    model.save_pretrained(folder)
    return folder


def save_tokenizer(folder: Path, words: list[str]) -> None:
    """A word-level tokenizer over ``words`` (plus ``<unk>``), saved beside the model."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<unk>", *dict.fromkeys(words)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(
        folder)


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """GPT-2 and Llama, n_embd 64, 4 layers, saved once for the command-line tests."""
    root = tmp_path_factory.mktemp("hf")
    return {arch: save_model(root / arch, arch) for arch in ("gpt2", "llama")}


# ---------------------------------------------------------------------------- the adapter
@pytest.mark.parametrize("arch", ["gpt2", "llama", "mistral", "qwen2"])
def test_updates_chain_into_the_models_own_hidden_states(arch, tmp_path):
    from steerflow.analysis.hf_stack import load_hf_stack, residual_updates

    stack = load_hf_stack(str(save_model(tmp_path / arch, arch, d=16, layers=3, scale=0.1)))
    idx = torch.randint(0, VOCAB, (2, 5))
    updates = residual_updates(stack, idx)
    with torch.no_grad():
        hidden = stack.model(idx, output_hidden_states=True).hidden_states  # x_0, ..., norm(x_L)
        final_norm = stack.model.base_model.ln_f if arch == "gpt2" else stack.model.base_model.norm
        final = final_norm(updates[-1].x + updates[-1].update)
    assert [u.label for u in updates] == ["block 0", "block 1", "block 2"]
    for upd, h in zip(updates, hidden):  # x_l is the model's own input to layer l
        torch.testing.assert_close(upd.x, h, rtol=0, atol=1e-12)
        with torch.no_grad():  # the branch, with its recorded extras, reproduces the update
            torch.testing.assert_close(upd.branch(upd.x), upd.update, rtol=0, atol=1e-12)
    torch.testing.assert_close(final, hidden[-1], rtol=0, atol=1e-12)


#: relative tolerance of μ against the dense value: GPT-2 runs in float64 throughout (EXACT, as in
#: test_lognorm); Llama's RMSNorm normalises in float32 inside transformers, so its Jacobian
#: products carry float32 roundoff: a few float32 ulps, 10 eps32 ≈ 1.2e-6
DENSE_RTOL = {"gpt2": EXACT, "llama": 10 * torch.finfo(torch.float32).eps}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_branch_log_norm_equals_the_dense_jacobian_value(arch, tmp_path):
    from steerflow.analysis.hf_stack import load_hf_stack, residual_updates

    stack = load_hf_stack(str(save_model(tmp_path / arch, arch, d=16, layers=2, scale=0.3)))
    updates = residual_updates(stack, torch.randint(0, VOCAB, (1, 3)))  # n = T·d = 48
    lanczos = branch_log_norms(updates, iters=10_000)  # capped at n: the exact value
    for upd, est in zip(updates, lanczos):
        shape = upd.x.shape
        dense = dense_log_norm(lambda z, f=upd.branch: f(z.reshape(shape)).reshape(-1),
                               upd.x.reshape(-1))
        torch.testing.assert_close(est.mu, dense.reshape(1), rtol=DENSE_RTOL[arch], atol=0)
        assert float(est.residual.max()) < 1e3 * DENSE_RTOL[arch] * abs(float(dense))


def test_a_tokenizer_in_the_folder_encodes_the_validation_text(tmp_path, make_fake_data):
    from steerflow.analysis.hf_flow import analysis_tokens
    from steerflow.analysis.hf_stack import load_hf_stack
    from steerflow.analysis.settings import HFFlowConfig

    words = "the a river city was north old king of and in".split()
    data = make_fake_data(tmp_path / "data", words=words)
    folder = save_model(tmp_path / "gpt2", "gpt2", d=16, layers=1)
    save_tokenizer(folder, words)
    cfg = HFFlowConfig(source=str(folder), out=str(tmp_path / "o"), data_dir=str(data),
                       batch_size=2, seq_len=6)
    idx, inputs = analysis_tokens(load_hf_stack(cfg.source), cfg)
    text = (data / "wikitext-2" / "valid.txt").read_text()
    vocab = {w: i for i, w in enumerate(["<unk>", *words])}
    expected = [vocab.get(w, 0) for w in text.split()][:12]
    assert inputs["kind"] == "text" and idx.tolist() == [expected[:6], expected[6:]]


def test_a_hub_source_is_downloaded_without_pickles(models, monkeypatch):
    # offline: the download is replaced by the saved folder; hf:<repo id> must reach it by name
    from steerflow.analysis import hf_stack

    asked = []
    monkeypatch.setattr(hf_stack, "download", lambda repo, patterns: asked.append(
        (repo, patterns)) or models["gpt2"])
    stack = hf_stack.load_hf_stack("hf:someone/tiny-gpt2")
    assert stack.folder == models["gpt2"] and asked[0][0] == "someone/tiny-gpt2"
    assert not any(p.endswith((".bin", ".pt", ".h5", ".msgpack")) for p in asked[0][1])


# ---------------------------------------------------------------------------- the command
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_analyze_flow_hf_writes_the_discrete_analysis(arch, models, tmp_path, capsys):
    out = tmp_path / "flow"
    code, stdout, stderr = run_cli(["analyze", "flow", "--hf", str(models[arch]), "--out",
                                    str(out), "--json", "--batch-size", "2", "--seq-len", "8",
                                    "--lanczos-iters", "12", "--seed", "3"], capsys)
    assert code == 0, stderr
    results = json.loads(stdout)  # exactly one JSON object on stdout
    assert results == json.loads((out / "results.json").read_text())
    assert results["inputs"] == {"kind": "random", "seed": 3, "description": results["inputs"][
        "description"]} and results["tokens_analysed"] == 16
    assert results["model"]["architecture"] == arch and results["model"]["layers"] == 4
    rows = results["discrete"]["checkpoint"]
    assert [r["layer"] for r in rows] == [f"block {i}" for i in range(4)]
    assert all(r["ratio_median"] > 0 and r["mu_max"] >= r["mu_mean"] for r in rows)
    assert rows[-1]["cos_next_median"] is None
    assert results["mu"]["count"] == 4 * 2 and results["mu"]["grouping"] == "sequence"
    assert results["mu"]["max"] == max(r["mu_max"] for r in rows)
    v = results["bound_violations"]
    assert v["points"] == 4 * 2 and 0 <= v["count"] <= v["points"]
    assert set(results["perturbation"]["stack"]) >= {"growth_at_1", "bound_at_1", "violations"}
    assert all(results[k] is None for k in ("order", "convergence", "refinement", "contractive"))
    assert results["figures"] == ["discrete_layers.png", "mu_hist.png", "perturbation.png"]
    assert all((out / name).stat().st_size > 0 for name in results["figures"])
    assert "How ODE-like are the blocks?" in (out / "report.md").read_text()


def test_bad_hf_inputs_exit_2_with_one_line(models, tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("not a model\n")
    transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32).save_pretrained(tmp_path / "bert")
    gpt2 = str(models["gpt2"])
    (tmp_path / "no_weights").mkdir()  # config.json only (a pickle would be refused the same way)
    (tmp_path / "no_weights" / "config.json").write_text((models["gpt2"] / "config.json").read_text())
    cases = [
        (["--hf", str(plain)], "no config.json"),
        (["--hf", str(tmp_path / "no_weights"), "--seq-len", "8"], "cannot load the model"),
        (["--hf", str(tmp_path / "missing")], "no such folder"),
        (["--hf", str(tmp_path / "bert")], "architecture 'bert'"),
        (["--hf", "hf:"], "--hf needs"),
        (["--hf", gpt2, "--seq-len", "64"], "exceeds the model's 32 positions"),
        (["--hf", gpt2, "--methods", "rk4"], "--methods applies to hybrid checkpoints"),
        (["--hf", gpt2, "--eps", "1e-4"], "--eps applies to hybrid checkpoints"),
        (["--hf", gpt2, "--baseline", gpt2], "--baseline applies to hybrid checkpoints"),
        ([gpt2, "--hf", gpt2], "not allowed with argument checkpoint"),
        ([str(tmp_path / "ckpt"), "--seq-len", "8"], "--seq-len applies to --hf"),
        ([], "one of the arguments checkpoint --hf is required"),
    ]
    for args, message in cases:
        code, stdout, stderr = run_cli(["analyze", "flow", *args, "--out", str(tmp_path / "o"),
                                        "--quiet"], capsys)
        assert code == 2 and stdout == "", (args, stderr)
        assert len(stderr.splitlines()) == 1 and message in stderr, (args, stderr)
