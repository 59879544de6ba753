"""``steerflow bench --peers``: every figure against transformers, the steering methods and the
start-up is reported as a finite positive number, and the comparison with transformers runs the
same computation on both sides (identical weights, agreeing logits) before it times anything."""

import contextlib
import io
import json
import math

import pytest
import torch

from steerflow.bench.peers import LOGITS_ATOL, PeerMismatch, build_peers
from steerflow.bench.suite import PEER_KEYS, check_targets, lookup
from steerflow.cli.main import main
from steerflow.config import ModelConfig

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def peers_run(tmp_path_factory):
    """One ``steerflow bench --peers --quick --json --out FILE`` run, shared by the tests below."""
    out = tmp_path_factory.mktemp("bench") / "peers.json"
    stdout = io.StringIO()
    threads = torch.get_num_threads()  # --quick sets one thread for this process: give it back
    try:
        with contextlib.redirect_stdout(stdout):
            code = main(["bench", "--peers", "--quick", "--json", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return code, stdout.getvalue(), out


def test_every_peer_figure_is_finite_and_positive(peers_run):
    code, stdout, out = peers_run
    assert code == 0
    result = json.loads(stdout)  # exactly one JSON object on stdout
    assert json.loads(out.read_text()) == result
    for key in PEER_KEYS:
        value = lookup(result, key)
        assert isinstance(value, float) and math.isfinite(value) and value > 0, key
    assert result["config"] == "tiny"
    assert "latency_ratio" not in result  # --peers runs the peer benchmarks only


def test_transformers_and_steerflow_computed_the_same_thing(peers_run):
    result = json.loads(peers_run[1])
    peers = result["peers"]
    assert peers["agreement"]["logits_max_abs_diff"] <= LOGITS_ATOL
    assert peers["transformers"]["params"] == peers["params"]["baseline"]
    for figure in ("generate_b1", "generate_b8"):
        d = peers["detail"][figure]
        assert d["batch"] == int(figure[-1]) and d["new_tokens"] == 16  # quick: 16 new tokens
    # each ratio is transformers' time over steerflow's, consistent with the absolute figures
    lat = peers["detail"]["latency"]
    for model in ("baseline", "hybrid"):
        assert lat["ratio"][model]["q1"] <= peers[model]["latency"] <= lat["ratio"][model]["q3"]


def test_startup_imports(peers_run):
    """``import steerflow`` loads no torch, and the way to the first token no torch._dynamo."""
    imports = json.loads(peers_run[1])["startup"]["detail"]["imports"]
    assert imports["import"] == {"torch": False}
    assert imports["generate"]["torch"] is True  # the probe sees heavy imports at all
    assert imports["generate"]["torch._dynamo"] is False
    assert imports["generate"]["transformers"] is False


def test_targets_are_checked_on_dotted_keys():
    result = {"peers": {"baseline": {"latency": 1.2, "train": 0.9}},
              "steer_speed": {"ode_over_dexperts": 2.0}, "startup": {"help_s": 0.2}}
    report = check_targets(result, "paper")
    assert report["peers.baseline.latency"]["met"] is True
    assert report["peers.baseline.train"]["met"] is False
    assert report["steer_speed.ode_over_dexperts"] == {"value": 2.0, "target": ">= 2.5",
                                                       "met": False}
    assert "peers.hybrid.latency" not in report  # not measured, not reported
    # start-up targets hold for any config, the model targets for the paper and gpt2 shapes only
    assert set(check_targets(result, "tiny")) == {"startup.help_s"}


def test_a_wrong_weight_mapping_is_refused_before_timing(monkeypatch):
    """Two blocks' MLP weights swapped: same shapes, another function, so the logits differ."""
    import steerflow.hf.gpt2 as gpt2

    original = gpt2.to_steerflow

    def swapped(tensors, config, where):
        out = dict(original(tensors, config, where))
        a, b = "blocks.0.mlp.c_fc.weight", "blocks.1.mlp.c_fc.weight"
        out[a], out[b] = out[b], out[a]
        return out

    config = ModelConfig.from_name("tiny")
    ids = torch.randint(0, config.vocab_size, (2, 8))
    assert build_peers(config, "cpu", 0, ids).logits_max_abs_diff <= LOGITS_ATOL
    monkeypatch.setattr(gpt2, "to_steerflow", swapped)
    with pytest.raises(PeerMismatch, match="differ by"):
        build_peers(config, "cpu", 0, ids)
