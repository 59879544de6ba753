"""Runs that stay stable: the field's max-norm constraint, the consistency penalty on by default
for the control tasks, and exact resume of a run whose objective holds a learned parameter."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from steerflow.errors import ConfigError
from steerflow.train import train
from steerflow.train import checkpoint as ckpt
from steerflow.train.config import CONTROL_CONSISTENCY, GEDI_WEIGHT
from steerflow.train.metrics import read_metrics

FIELD_OUT = "ode.field.fc_out.weight"
#: the constraint scales W by R/‖W‖ in float32; the norm of the result is R up to the rounding of
#: that factor and of the norm's sum of squares: a few ulps, far below 1e-5 relative
NORM_RTOL = 1e-5


@pytest.fixture
def pretrained(make_cfg):
    lm = make_cfg("lm", steps=2)
    train(lm)
    return lm


def steer_cfg(make_cfg, lm, name: str, **changes):
    values = dict(task="steer", init_from=lm.out, steer_data="cloze", tokenizer=None, steps=6,
                  batch_size=8, lr=2e-2, warmup_steps=0)
    return make_cfg(name, **{**values, **changes})


def field_norm(run) -> float:
    weights = load_file(str(Path(run.out) / "model.safetensors"))
    return float(torch.linalg.matrix_norm(weights[FIELD_OUT]))


def test_defaults_are_as_documented(make_cfg, pretrained):
    assert CONTROL_CONSISTENCY == 0.0 and GEDI_WEIGHT == 0.2
    lm = make_cfg("plain")
    assert lm.ode_consistency == 0.0 and lm.field_max_norm is None
    steer = steer_cfg(make_cfg, pretrained, "steer")
    assert steer.ode_consistency == CONTROL_CONSISTENCY and steer.steer_discriminative == 0.0
    distill = make_cfg("distill", task="distill", init_from=pretrained.out,
                       distill_teacher="guidance", tokenizer=None)
    assert distill.ode_consistency == CONTROL_CONSISTENCY
    expert = make_cfg("expert", task="expert", init_from=pretrained.out, tokenizer=None)
    assert expert.ode_consistency == 0.0
    assert steer_cfg(make_cfg, pretrained, "off", ode_consistency=0).ode_consistency == 0
    # the saved config states the value the run used, so a resume compares like with like
    assert json.loads(steer.to_json())["ode_consistency"] == CONTROL_CONSISTENCY
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="field_max_norm must be"):
            make_cfg("bad", field_max_norm=bad)
    with pytest.raises(ConfigError, match="baseline"):
        make_cfg("baseline", model="baseline", field_max_norm=1.0)


def test_cli_flags_map_to_the_documented_values(make_cfg, pretrained):
    from steerflow.cli.main import build_parser
    from steerflow.cli.train import config_from_args

    def cfg(*flags):
        args = build_parser().parse_args(["train", "--task", "steer", "--from", pretrained.out,
                                          "--out", str(Path(pretrained.out).parent / "cli"),
                                          *flags])
        return config_from_args(args)

    assert cfg().ode_consistency == CONTROL_CONSISTENCY and cfg().steer_discriminative == 0.0
    assert cfg("--steer-discriminative").steer_discriminative == GEDI_WEIGHT
    assert cfg("--steer-discriminative", "0.5").steer_discriminative == 0.5
    assert cfg("--ode-consistency", "0").ode_consistency == 0.0
    assert cfg("--field-max-norm", "0.25").field_max_norm == 0.25


def test_max_norm_keeps_the_field_weight_norm_at_most_r(make_cfg, pretrained):
    free = steer_cfg(make_cfg, pretrained, "free", ode_consistency=0.0)
    train(free)
    r = field_norm(free) / 2  # the unconstrained run ends at twice the bound
    bounded = steer_cfg(make_cfg, pretrained, "bounded", ode_consistency=0.0, field_max_norm=r)
    train(bounded)
    records = read_metrics(bounded.out_dir / "metrics.jsonl", "train")
    norms = [rec["field_norm"] for rec in records]
    assert all(n <= r * (1 + NORM_RTOL) for n in norms)
    assert norms[-1] == pytest.approx(r, rel=NORM_RTOL)  # the bound was reached and held
    assert field_norm(bounded) <= r * (1 + NORM_RTOL)
    assert "field_norm" not in read_metrics(free.out_dir / "metrics.jsonl", "train")[0]
    # the constraint only rescales the output layer: the other field weights still train
    before = load_file(str(Path(pretrained.out) / "model.safetensors"))
    after = load_file(str(Path(bounded.out) / "model.safetensors"))
    assert not torch.equal(before["ode.field.fc_in.linear.weight"],
                           after["ode.field.fc_in.linear.weight"])


def test_resume_with_a_learned_gedi_scale_and_max_norm_is_bit_exact(make_cfg, pretrained):
    """A run stopped after its step-3 checkpoint and resumed equals the uninterrupted run bit for
    bit: weights, logged losses, GeDi's scale and its Adam moments (the default consistency
    penalty, the discriminative term and the max-norm constraint all active)."""
    full = steer_cfg(make_cfg, pretrained, "full", steer_discriminative=0.5, field_max_norm=0.05,
                     save_every=3)
    train(full)
    cut_dir = full.out_dir.parent / "cut"
    shutil.copytree(full.out_dir, cut_dir)
    # what a crash after the step-3 checkpoint leaves behind
    shutil.rmtree(ckpt.checkpoint_root(cut_dir) / "step_000006")
    for name in ("model.safetensors", "config.json", "summary.json"):
        (cut_dir / name).unlink()
    resumed = train(full.replace(out=str(cut_dir), resume=True))
    assert resumed.resumed_from == 3 and resumed.step == 6

    def curve(run_dir: Path, key: str) -> list:
        return [r[key] for r in read_metrics(run_dir / "metrics.jsonl", "train")]

    for key in ("loss", "grad_norm", "gedi_scale", "gedi_loss", "field_norm"):
        assert curve(cut_dir, key) == curve(full.out_dir, key), key
    a = load_file(str(cut_dir / "model.safetensors"))
    b = load_file(str(full.out_dir / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    last = [ckpt.read_trainer_state(ckpt.checkpoint_root(d) / "step_000006")["objectives"]
            for d in (cut_dir, full.out_dir)]
    assert last[0] == last[1] and last[0]["discriminative"]["log_scale"] != 0.0


def test_resume_refuses_a_checkpoint_without_the_objective_state(make_cfg, pretrained):
    run = steer_cfg(make_cfg, pretrained, "gedi", steps=2, save_every=1, steer_discriminative=0.5)
    train(run)
    for ref in ckpt.list_checkpoints(run.out_dir):  # as if written by a run without the term
        trainer = json.loads((ref.path / ckpt.TRAINER_FILE).read_text())
        del trainer["objectives"]
        (ref.path / ckpt.TRAINER_FILE).write_text(json.dumps(trainer))
    with pytest.raises(Exception, match="no state of the discriminative term"):
        train(run.replace(resume=True, steps=2))


def test_two_gloo_ranks_average_the_scale_gradient(make_cfg, pretrained, cli_args, steerflow_cmd):
    """Under DDP the scale lives outside the wrapped model: its gradient is averaged by the loop,
    so 2 ranks train the scale as 1 process does. The scale's gradient is a difference of nearly
    equal log-likelihoods (a barely steered model: ℓ(x|u) − ℓ(x|−u) ~ 1e-5 of |ℓ| ~ 5), so the
    float32 round-off of summing in another order (1e-7 · |ℓ|) is a percent of it; Adam's steps
    are ~lr · g/|g|, so the scales agree to a small fraction of one step, not to a few ulps."""
    common = dict(steps=3, eval_interval=3, save_every=3, steer_discriminative=0.5,
                  ode_consistency=0.0)
    single = steer_cfg(make_cfg, pretrained, "single", **common)
    train(single)
    ddp = steer_cfg(make_cfg, pretrained, "ddp", **common)
    cmd, env = steerflow_cmd(*cli_args(ddp), "--task", "steer", "--from", pretrained.out,
                             "--steer-data", "cloze", "--lr", str(ddp.lr), "--warmup", "0",
                             "--steer-discriminative", "0.5", "--ode-consistency", "0")
    argv = [a for a in cmd[3:]]
    i = argv.index("--tokenizer")
    del argv[i:i + 2]  # the steering run takes the checkpoint's tokenizer
    launcher = [cmd[0], "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "steerflow", *argv]
    done = subprocess.run(launcher, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    got = read_metrics(ddp.out_dir / "metrics.jsonl", "train")
    want = read_metrics(single.out_dir / "metrics.jsonl", "train")
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in want], rel=1e-5)
    step = 0.01 * ddp.lr  # 1 % of one Adam step of log s
    assert [r["gedi_scale"] for r in got] == pytest.approx([r["gedi_scale"] for r in want],
                                                            abs=step)
    scales = [ckpt.read_trainer_state(ckpt.checkpoint_root(d) / "step_000003")["objectives"]
              ["discriminative"]["log_scale"] for d in (ddp.out_dir, single.out_dir)]
    assert scales[0] == pytest.approx(scales[1], abs=step) and scales[0] != 0.0
