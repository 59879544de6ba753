"""``steerflow generate``: JSON lines that parse, seed determinism, prompt files, bad flags."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from steerflow.cli.main import main
from steerflow.config import ModelConfig
from steerflow.data.tokenizer import train_bpe
from steerflow.model.gpt import SteerFlowGPT

TEXT = ["The movie was good .", "The film was bad .", "The team moved to the north of the city ."]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Tiny random checkpoints with a saved tokenizer: control_dim 1 and 2, and a discrete one."""
    tok = train_bpe(TEXT * 20, 300)
    root = tmp_path_factory.mktemp("generate")
    torch.manual_seed(0)
    for name, overrides in (("c1", {}), ("c2", {"control_dim": 2}), ("discrete", {"ode_span": None})):
        model = SteerFlowGPT(ModelConfig.from_name("tiny", vocab_size=tok.vocab_size, **overrides))
        model.tokenizer = tok
        model.save_pretrained(root / name)
    return root, tok


def run(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code)
    return code, out.getvalue(), err.getvalue()


def test_json_lines_parse_and_hold_the_continuation_only(ckpts):
    root, tok = ckpts
    code, out, _ = run(["generate", str(root / "c1"), "--prompt", "The movie was", "--u", "1",
                        "--samples", "3", "--max-new-tokens", "7", "--top-p", "0.9", "--json",
                        "--threads", "1"])
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["sample"] for r in records] == [0, 1, 2]
    for r in records:
        assert set(r) == {"prompt", "u", "sample", "text", "tokens"}
        assert r["prompt"] == "The movie was" and r["u"] == [1.0]
        assert len(r["tokens"]) == 7 and r["text"] == tok.decode(r["tokens"])


def test_same_seed_same_output_and_another_seed_differs(ckpts):
    root, _ = ckpts
    argv = ["generate", str(root / "c1"), "--prompt", "The film", "--samples", "2",
            "--max-new-tokens", "12", "--json", "--threads", "1"]
    first, second = run(argv + ["--seed", "5"])[1], run(argv + ["--seed", "5"])[1]
    other = run(argv + ["--seed", "6"])[1]
    assert first == second
    # a random tiny model spreads its mass over ~300 tokens: two 24-token draws never coincide
    assert first != other


def test_prompts_file_jsonl_and_plain_text(ckpts, tmp_path):
    root, _ = ckpts
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text('{"prompt": "The movie was"}\n{"prompt": "The team"}\n')
    plain = tmp_path / "prompts.txt"
    plain.write_text("The movie was\nThe team\n")
    outs = []
    for path in (jsonl, plain):
        code, out, _ = run(["generate", str(root / "c1"), "--prompts-file", str(path), "--json",
                            "--max-new-tokens", "4"])
        assert code == 0
        outs.append([json.loads(line) for line in out.splitlines()])
    assert [r["prompt"] for r in outs[0]] == ["The movie was", "The team"]
    assert outs[0] == outs[1]


def test_vector_control_and_solver(ckpts):
    root, _ = ckpts
    code, out, _ = run(["generate", str(root / "c2"), "--prompt", "The movie", "--u", "1,-0.5",
                        "--json", "--max-new-tokens", "3", "--solver", "rk4:2"])
    assert code == 0 and json.loads(out)["u"] == [1.0, -0.5]
    code, out, _ = run(["generate", str(root / "c1"), "--prompt", "The movie", "--json",
                        "--max-new-tokens", "3", "--solver", "dopri5:1e-3"])
    assert code == 0 and len(json.loads(out)["tokens"]) == 3


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "0"], "temperature"),
    (["--top-p", "0"], "top-p"),
    (["--top-p", "1.5"], "top-p"),
    (["--top-k", "0"], "top-k"),
    (["--samples", "-1"], "samples"),
    (["--max-new-tokens", "-3"], "max-new-tokens"),
    (["--u", "1,2"], "control_dim"),
    (["--u", "up"], "--u"),
    (["--solver", "euler:x"], "solver"),
    (["--samples", "two"], "invalid int"),
])
def test_bad_flags_exit_2_with_one_line(ckpts, flags, message):
    root, _ = ckpts
    code, out, err = run(["generate", str(root / "c1"), "--prompt", "The movie", *flags])
    assert code == 2 and message in err and "Traceback" not in err
    assert out == "" and len(err.strip().splitlines()) == 1


def test_bad_inputs_exit_2(ckpts, tmp_path):
    root, _ = ckpts
    long_prompt = " ".join(["movie"] * 40)  # more tokens than the tiny context of 32
    cases = [
        (["generate", str(tmp_path / "missing"), "--prompt", "x"], "no such checkpoint"),
        (["generate", str(root / "c1"), "--prompt", long_prompt], "tokens"),
        (["generate", str(root / "c1"), "--prompt", ""], "empty"),
        (["generate", str(root / "c1"), "--prompts-file", str(tmp_path / "none.txt")], "does not exist"),
        (["generate", str(root / "discrete"), "--prompt", "The", "--u", "1"], "discrete"),
        (["generate", str(root / "c1")], "required"),
    ]
    for argv, message in cases:
        code, out, err = run(argv)
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)
        assert out == ""


# ---------------------------------------------------------------------------- --guidance, --dexperts
@pytest.fixture(scope="module")
def other_tokenizer_ckpt(ckpts):
    """A tiny checkpoint whose tokenizer was trained on other text."""
    root, tok = ckpts
    other = train_bpe(["Quite another corpus , with other words ."] * 20 + TEXT[::-1] * 10, 300)
    assert other.content_hash() != tok.content_hash()
    torch.manual_seed(1)
    model = SteerFlowGPT(ModelConfig.from_name("tiny", vocab_size=other.vocab_size))
    model.tokenizer = other
    model.save_pretrained(root / "other-tokenizer")
    return root / "other-tokenizer"


GEN = ["--prompt", "The movie was", "--samples", "3", "--max-new-tokens", "10", "--json",
       "--threads", "1", "--seed", "3"]


def test_guidance_zero_is_exactly_the_u0_text_for_the_same_seed(ckpts):
    root, _ = ckpts
    code, at_zero, _ = run(["generate", str(root / "c1"), "--u", "0", *GEN])
    assert code == 0
    code, guided, _ = run(["generate", str(root / "c1"), "--u", "1", "--guidance", "0", *GEN])
    assert code == 0
    zero = [json.loads(line) for line in at_zero.splitlines()]
    records = [json.loads(line) for line in guided.splitlines()]
    # γ = 0 draws from z(0) with the same generator: token for token the u = 0 samples
    assert [r["tokens"] for r in records] == [r["tokens"] for r in zero]
    assert [r["text"] for r in records] == [r["text"] for r in zero]
    assert all(r["guidance"] == 0.0 and r["u"] == [1.0] for r in records)
    assert all("guidance" not in r for r in zero)  # the plain output keeps its fields


@pytest.fixture(scope="module")
def steerable_ckpt(ckpts):
    """A tiny hybrid (control_dim 2) whose field output layer is scaled up 1000×: a fresh field
    starts at std 1e-3 (``OUTPUT_INIT_STD``), so z(u) − z(−u) would be too small to move a draw."""
    root, tok = ckpts
    torch.manual_seed(2)
    model = SteerFlowGPT(ModelConfig.from_name("tiny", vocab_size=tok.vocab_size, control_dim=2))
    model.ode.field.scale_output_(torch.tensor(1000.0))
    model.tokenizer = tok
    model.save_pretrained(root / "steerable")
    return root / "steerable"


def test_guidance_on_a_tiny_hybrid_prints_json_and_samples_the_contrast(ckpts, steerable_ckpt):
    from steerflow.model.hub import load_model

    _, tok = ckpts
    outs = {}
    for gamma in ("0", "3"):
        code, out, err = run(["generate", str(steerable_ckpt), "--u", "1,-0.5", "--guidance",
                              gamma, *GEN, "--top-p", "0.9"])
        assert code == 0, err
        outs[gamma] = [json.loads(line) for line in out.splitlines()]
    for r in outs["3"]:
        assert set(r) == {"prompt", "u", "sample", "text", "tokens", "guidance"}
        assert r["guidance"] == 3.0 and r["u"] == [1.0, -0.5]
        assert len(r["tokens"]) == 10 and r["text"] == tok.decode(r["tokens"])
    # the CLI samples what the library's generate(..., guidance=γ) samples, draw for draw
    model = load_model(str(steerable_ckpt))
    idx = torch.tensor([tok.encode("The movie was")]).repeat(3, 1)
    with torch.inference_mode():
        want = model.generate(idx, [1.0, -0.5], 10, top_p=0.9, seed=3, guidance=3.0)
    assert [r["tokens"] for r in outs["3"]] == want[:, idx.shape[1]:].tolist()
    # and γ = 3 moved the draws away from plain sampling at u = 0
    assert [r["tokens"] for r in outs["3"]] != [r["tokens"] for r in outs["0"]]


def test_dexperts_with_equal_experts_is_the_base_and_json_names_them(ckpts):
    root, _ = ckpts
    code, base, _ = run(["generate", str(root / "c1"), "--u", "0", *GEN])
    same = f"{root / 'c2'},{root / 'c2'}"  # z_pos - z_neg = 0: the base's own draws
    code, out, err = run(["generate", str(root / "c1"), "--dexperts", same, "--alpha", "2",
                          "--u", "1", *GEN])
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["tokens"] for r in records] == [json.loads(line)["tokens"] for line in base.splitlines()]
    assert records[0]["dexperts"] == {"expert": str(root / "c2"), "anti_expert": str(root / "c2"),
                                      "alpha": 2.0, "direction": 1}
    code, out, _ = run(["generate", str(root / "discrete"), "--dexperts",
                        f"{root / 'c1'},{root / 'c2'}", "--u", "-1", *GEN])
    assert code == 0 and json.loads(out.splitlines()[0])["dexperts"]["direction"] == -1


@pytest.mark.parametrize("flags, message", [
    (["--guidance", "nan"], "--guidance must be a finite number >= 0"),
    (["--guidance", "-1"], "--guidance must be a finite number >= 0"),
    (["--guidance", "1", "--dexperts", "a,b"], "not allowed with"),
    (["--alpha", "2"], "--dexperts"),
    (["--dexperts", "only-one"], "two checkpoint folders"),
    (["--dexperts", "{c1},{c1}", "--alpha", "-1"], "--alpha must be"),
    (["--dexperts", "{c1},{c1}", "--u", "1,1"], "one number"),
    (["--dexperts", "{c1},{other}"], "needs models with the same tokenizer"),
])
def test_bad_steering_flags_exit_2_with_one_line(ckpts, other_tokenizer_ckpt, flags, message):
    root, _ = ckpts
    flags = [f.format(c1=root / "c1", other=other_tokenizer_ckpt) for f in flags]
    code, out, err = run(["generate", str(root / "c1"), "--prompt", "The movie", *flags])
    assert code == 2 and message in err and "Traceback" not in err, err
    assert out == "" and len(err.strip().splitlines()) <= 2  # argparse: usage + error line


def test_guidance_on_a_discrete_checkpoint_is_refused(ckpts):
    root, _ = ckpts
    code, out, err = run(["generate", str(root / "discrete"), "--prompt", "The", "--guidance", "1"])
    assert code == 2 and "discrete baseline" in err and "hybrid" in err
    assert out == "" and len(err.strip().splitlines()) == 1
