"""Distillation of a contrast teacher (``--task distill``) and the expert task beside it.

The teacher is DExperts' Eq. 1 at strength u·α (or guidance over u): at u = 0 it is the base
exactly, an expert equal to its anti-expert leaves the base at every u, and −u swaps the experts.
The distillation batches are a pure function of (seed, step) that ranks split; on ``tiny``,
training lowers the KL to the teacher and makes u move the next-token distribution.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from steerflow.errors import ConfigError
from steerflow.model.gpt import SteerFlowGPT
from steerflow.steer.distill import ContrastTeacher, DistillSource, kl_by_u, teacher_kl
from steerflow.train import TrainConfig, train
from steerflow.train.metrics import read_metrics

from .conftest import POSITIVE, tiny_config


@pytest.fixture(scope="module")
def run_cfg(fake_data_dir, pretrained_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("distill-cache")
    root = tmp_path_factory.mktemp("distill-runs")

    def make(name: str, **changes) -> TrainConfig:
        values = dict(out=str(root / name), config="tiny", init_from=str(pretrained_dir),
                      data_dir=str(fake_data_dir), cache_dir=str(cache), steps=4, batch_size=8,
                      eval_batches=2, test_batches=2, threads=1, quiet=True, device="cpu",
                      lr=1e-2, warmup_steps=0)
        values.update(changes)
        return TrainConfig(**values)

    return make


@pytest.fixture(scope="module")
def experts(run_cfg):
    """A positive and a negative expert: the pretrained model fine-tuned on one label each."""
    paths = []
    for label in (1, -1):
        cfg = run_cfg(f"expert{label}", task="expert", expert_label=label, steps=30)
        result = train(cfg)
        assert result.trainable_params == result.model.param_counts().total  # every weight
        paths.append(Path(cfg.out))
    return tuple(paths)


def _models(pretrained_dir, experts):
    return [SteerFlowGPT.from_pretrained(p).eval() for p in (pretrained_dir, *experts)]


def _u(value: float, rows: int) -> torch.Tensor:
    return torch.full((rows, 1), float(value))


# ---------------------------------------------------------------------------- the teacher
def test_teacher_is_the_base_at_zero_and_swaps_the_experts_at_minus_u(pretrained_dir, experts):
    base, pos, neg = _models(pretrained_dir, experts)
    teacher = ContrastTeacher.dexperts(base, pos, neg, alpha=3.0)
    x = torch.randint(0, 400, (3, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = [m(x)[0] for m in (base, pos, neg)]
    assert torch.equal(teacher.logits(x, _u(0, 3)), z[0] + 0.0 * (z[1] - z[2]))
    torch.testing.assert_close(teacher.logits(x, _u(0.5, 3)), z[0] + 1.5 * (z[1] - z[2]))
    swapped = ContrastTeacher.dexperts(base, neg, pos, alpha=3.0)
    torch.testing.assert_close(teacher.logits(x, _u(-0.5, 3)), swapped.logits(x, _u(0.5, 3)))
    same = ContrastTeacher.dexperts(base, pos, copy.deepcopy(pos), alpha=50.0)
    assert torch.equal(same.logits(x, _u(1, 3)), z[0])


def test_teacher_on_the_base_nucleus_is_the_contrast_there_and_zero_elsewhere(pretrained_dir,
                                                                              experts):
    from steerflow.model.decoding import contrast_logits, filter_logits

    base, pos, neg = _models(pretrained_dir, experts)
    full = ContrastTeacher.dexperts(base, pos, neg, alpha=2.0)
    cut = ContrastTeacher.dexperts(base, pos, neg, alpha=2.0, top_p=0.5)
    x = torch.randint(0, 400, (2, 6), generator=torch.Generator().manual_seed(4))
    u = torch.tensor([[0.7], [-0.3]])
    z_full, z_cut = full.logits(x, u), cut.logits(x, u)  # (B, T, V)
    with torch.no_grad():
        zs = [m(x)[0] for m in (base, pos, neg)]
    kept = torch.isfinite(filter_logits(zs[0].reshape(-1, zs[0].shape[-1]), top_p=0.5))
    kept = kept.reshape(zs[0].shape)
    assert 0 < kept.sum() < kept.numel() and torch.equal(torch.isfinite(z_cut), kept)
    assert torch.equal(z_cut[kept], z_full[kept])
    # the last position is what DExperts samples from there (one row per example)
    sampled = contrast_logits(zs[0][:, -1], zs[1][:, -1], zs[2][:, -1], 2.0 * u, top_p=0.5)
    torch.testing.assert_close(z_cut[:, -1], sampled)
    # KL over the teacher's support only: finite, and by hand
    student = torch.randn_like(z_cut)
    log_t, log_s = z_cut.log_softmax(-1), student.log_softmax(-1)
    by_hand = torch.stack([
        (log_t[b, t][kept[b, t]].exp() * (log_t[b, t] - log_s[b, t])[kept[b, t]]).sum()
        for b in range(2) for t in range(6)]).reshape(2, 6)
    student.requires_grad_(True)
    kl = teacher_kl(z_cut, student)
    torch.testing.assert_close(kl, by_hand)
    kl.sum().backward()
    assert torch.isfinite(student.grad).all()
    with pytest.raises(ConfigError, match="top_p"):
        ContrastTeacher.dexperts(base, pos, neg, alpha=2.0, top_p=0.0)


def test_guidance_teacher_is_the_model_at_zero(pretrained_dir):
    model = SteerFlowGPT.from_pretrained(pretrained_dir).eval()
    teacher = ContrastTeacher.guidance(model, gamma=4.0)
    x = torch.randint(0, 400, (2, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(teacher.logits(x, _u(0, 2)), model(x, _u(0, 2))[0])
    with pytest.raises(ConfigError, match="discrete model ignores u"):
        ContrastTeacher.guidance(SteerFlowGPT(tiny_config(ode_span=None)), 1.0)


def test_kl_is_zero_for_the_same_distribution_and_positive_otherwise():
    z = torch.randn(2, 5, 30, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(teacher_kl(z, z + 7.0), torch.zeros(2, 5), atol=1e-6, rtol=0)
    assert bool((teacher_kl(z, z.flip(-1)) > 0).all())


# ---------------------------------------------------------------------------- the batches
def test_distill_batches_are_a_function_of_the_step_and_ranks_split_them(run_cfg, experts):
    from steerflow.data import resolve_data_source
    from steerflow.train.tasks import build_batch_source

    cfg = run_cfg("source", task="distill", block_size=32,
                  distill_teacher=f"dexperts:{experts[0]},{experts[1]}", distill_tokens=6)
    model = SteerFlowGPT.from_pretrained(cfg.init_from)
    source = build_batch_source(cfg, model, model.tokenizer, resolve_data_source(cfg.data_dir, require=("wikitext-2", "sst2")))
    assert isinstance(source, DistillSource) and source.on_policy_rows(8) == 4
    x, y, u = source.train_batch(3, 8)
    again = source.train_batch(3, 8)
    assert all(torch.equal(a, b) for a, b in zip((x, y, u), again))
    halves = [source.train_batch(3, 8, rank, 2) for rank in (0, 1)]
    for whole, parts in zip((x, y, u), zip(*halves)):
        assert torch.equal(whole, torch.cat(parts))
    assert bool((u.abs() <= 1).all()) and len(set(u.flatten().tolist())) == 8
    assert not torch.equal(u, source.train_batch(4, 8)[2])
    # on-policy rows: an opening of w tokens + 6 teacher tokens, y = next token, -1 after them
    counted = (y[:4] >= 0).sum(dim=1)
    assert len(set(counted.tolist())) == 1
    n = int(counted[0])
    assert torch.equal(y[:4, : n - 1], x[:4, 1:n]) and bool((y[:4, n:] == -1).all())
    assert bool((y[4:] >= 0).all())  # general-text windows count everywhere


# ---------------------------------------------------------------------------- training
def test_distillation_lowers_the_kl_and_u_moves_the_next_token(run_cfg, experts):
    spec = f"dexperts:{experts[0]},{experts[1]}"
    cfg = run_cfg("distill", task="distill", distill_teacher=spec, distill_alpha=1.0,
                  train_discrete=True, distill_tokens=8, steps=120, train_final_norm=True,
                  block_size=32)
    before = SteerFlowGPT.from_pretrained(cfg.init_from).eval()
    base, pos, neg = _models(cfg.init_from, experts)
    teacher = ContrastTeacher.dexperts(base, pos, neg, alpha=1.0)
    result = train(cfg)
    after = result.model.eval()
    records = read_metrics(Path(cfg.out) / "metrics.jsonl", "train")
    kl = [r["distill_kl"] for r in records]
    assert sum(kl[-10:]) < 0.7 * sum(kl[:10])
    tok = after.tokenizer
    x = torch.tensor([tok.encode(" The team moved to the north of the city . It was")])
    kl_before, kl_after = kl_by_u(before, teacher, x), kl_by_u(after, teacher, x)
    for value in (-1.0, 1.0):
        assert kl_after[value] < 0.8 * kl_before[value]
    assert kl_after[0.0] < 0.2 * kl_after[1.0]  # u = 0 stays near the base

    def shift(model) -> float:  # total variation between the next token at u = +1 and -1
        with torch.no_grad():
            p = [model(x, _u(v, 1))[0][0, -1].softmax(-1) for v in (1, -1)]
        return float((p[0] - p[1]).abs().sum() / 2)

    assert shift(after) > 0.05 and shift(after) > 10 * shift(before)


def test_control_path_and_head_recipe_trains_only_them_and_steers(run_cfg, experts):
    """``control_only`` + ``train_head``: W_o and an untied copy of the head are all that move."""
    spec = f"dexperts:{experts[0]},{experts[1]}"
    cfg = run_cfg("distill-head", task="distill", distill_teacher=spec, distill_alpha=1.0,
                  control_out=True, control_only=True, control_gain=3.0, train_head=True,
                  distill_on_policy=0.0, steps=60, block_size=32, weight_decay=0.0)
    before = SteerFlowGPT.from_pretrained(cfg.init_from).eval()
    base, pos, neg = _models(cfg.init_from, experts)
    teacher = ContrastTeacher.dexperts(base, pos, neg, alpha=1.0)
    after = train(cfg).model.eval()
    assert not after.config.tie_weights and after.config.control_out
    assert after.lm_head.weight.data_ptr() != after.wte.weight.data_ptr()
    tok = after.tokenizer
    x = torch.tensor([tok.encode(" The team moved to the north of the city . It was")])
    with torch.no_grad():  # below the head, u = 0 is the base (α and the gain are re-expressed)
        head = after.lm_head.weight.detach().clone()
        after.lm_head.weight.copy_(before.lm_head.weight)
        torch.testing.assert_close(after(x, _u(0, 1))[0], before(x, _u(0, 1))[0])
        after.lm_head.weight.copy_(head)
    for name in ("wte.weight", "ln_f.weight", "blocks.0.mlp.c_fc.weight"):
        assert torch.equal(after.get_parameter(name), before.get_parameter(name)), name
    assert after.ode.field.u_out.linear.weight.abs().sum() > 0
    kl_before, kl_after = kl_by_u(before, teacher, x), kl_by_u(after, teacher, x)
    for value in (-1.0, 1.0):
        assert kl_after[value] < 0.8 * kl_before[value]
    reloaded = SteerFlowGPT.from_pretrained(cfg.out).eval()  # the untied head survives saving
    with torch.no_grad():
        assert torch.equal(reloaded(x, _u(1, 1))[0], after(x, _u(1, 1))[0])


def test_untying_the_head_is_the_same_model(pretrained_dir):
    from steerflow.train.setup import untie_head

    model = SteerFlowGPT.from_pretrained(pretrained_dir).eval()
    x = torch.randint(0, 400, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        z = model(x)[0]
        untie_head(model)
        assert not model.config.tie_weights and model.lm_head.weight is not model.wte.weight
        assert torch.equal(model(x)[0], z)


def test_the_expert_learns_its_label_only(run_cfg, experts):
    from steerflow.data import resolve_data_source
    from steerflow.steer.data import build_expert_source

    cfg = run_cfg("expert-source", task="expert", expert_label=1)
    model = SteerFlowGPT.from_pretrained(cfg.init_from)
    source = build_expert_source(cfg, model, model.tokenizer, resolve_data_source(cfg.data_dir, require=("wikitext-2", "sst2")))
    x, y, u = source.train_batch(0, 16)
    assert u is None
    texts = {model.tokenizer.decode([t for t in row.tolist() if t != model.tokenizer.eos_id])
             .strip() for row in x}
    assert texts and all(any(p.split()[1] in t for p in POSITIVE) for t in texts)
    # the positive expert likes the positive reviews more than the base does
    pos = SteerFlowGPT.from_pretrained(experts[0]).eval()
    with torch.no_grad():
        xe, ye, _ = next(source.eval_batches("valid", 16))
        assert pos(xe, targets=ye)[1] < model.eval()(xe, targets=ye)[1]


def test_shaped_steering_and_conditional_pretraining_are_wired(run_cfg):
    from steerflow.data import resolve_data_source
    from steerflow.steer.conditional import ConditionalLMSource
    from steerflow.steer.shaped import ShapedBatchSource
    from steerflow.train.tasks import build_batch_source

    model = SteerFlowGPT.from_pretrained(run_cfg("x").init_from)
    data = resolve_data_source(run_cfg("x").data_dir, require=("wikitext-2", "sst2"))
    shaped = run_cfg("shaped", task="steer", steer_data="sst2-shaped", steps=2)
    assert isinstance(build_batch_source(shaped, model, model.tokenizer, data), ShapedBatchSource)
    assert train(shaped).summary()["completed"]
    cond = run_cfg("cond", task="lm", lm_u="conditional", lm_u_share=0.5, steps=2)
    assert isinstance(build_batch_source(cond, model, model.tokenizer, data), ConditionalLMSource)
    assert train(cond).summary()["completed"]


@pytest.mark.parametrize("changes, message", [
    (dict(task="distill"), "needs a teacher"),
    (dict(task="distill", distill_teacher="dexperts:only-one"), "distill_teacher must be"),
    (dict(task="distill", distill_teacher="guidance", distill_on_policy=1.5),
     "distill_on_policy must be in"),
    (dict(task="distill", distill_teacher="guidance", distill_alpha=float("nan")),
     "distill_alpha must be"),
    (dict(task="distill", distill_teacher="guidance", distill_tokens=0), "distill_tokens must"),
    (dict(task="steer", distill_teacher="guidance"), "applies to task='distill' only"),
    (dict(task="expert", expert_label=0), "expert_label must be"),
    (dict(task="lm", lm_u="conditional", lm_u_share=2.0), "lm_u_share must be"),
    (dict(task="lm", train_head=True), "train_head applies to task='steer' or 'distill'"),
    (dict(task="lm", control_only=True), "control_only applies to task='steer' or 'distill'"),
])
def test_bad_distillation_settings_are_refused(run_cfg, changes, message):
    with pytest.raises(ConfigError, match=message):
        run_cfg("bad", **changes)


@pytest.mark.parametrize("field", ["mlp", "depth-block"])
def test_control_only_trains_the_fields_zero_initialised_control_paths(field):
    from steerflow.config import ModelConfig
    from steerflow.train.setup import freeze_for_steering, set_control

    model = SteerFlowGPT(ModelConfig.from_name("tiny", field=field))
    if field == "mlp":
        with pytest.raises(ConfigError, match="add one with control_out"):
            freeze_for_steering(model, False, control_only=True)
        set_control(model, None, True, lambda _m: None)
    freeze_for_steering(model, False, control_only=True, train_head=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = ({"ode.field.u_out.linear.weight"} if field == "mlp"
                else {n for n, _ in model.named_parameters() if ".u_in." in n or ".u_proj." in n})
    assert expected and trainable == expected | {"lm_head.weight"}


def test_control_adapter_is_added_as_the_same_model_and_control_only_trains_it():
    from steerflow.config import ModelConfig
    from steerflow.train.setup import freeze_for_steering, set_control

    model = SteerFlowGPT(ModelConfig.from_name("tiny")).eval()
    x = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(x, _u(1, 2))[0]
        set_control(model, 3.0, False, lambda _m: None, adapter=4)
        assert model.config.control_adapter == 4 and model.config.control_gain == 3.0
        # B = 0, and W_u scaled by 1/3 under a gain of 3: the same function up to rounding
        torch.testing.assert_close(model(x, _u(1, 2))[0], before, rtol=1e-5, atol=1e-5)
    freeze_for_steering(model, False, control_only=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"ode.field.u_adapter.{n}" for n in ("down.weight", "down.bias",
                                                               "up.weight")}
    with pytest.raises(ConfigError, match="control_adapter"):
        set_control(SteerFlowGPT(ModelConfig.from_name("tiny", field="block")), None, False,
                    lambda _m: None, adapter=4)
