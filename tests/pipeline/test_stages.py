"""The stage runner reuses finished stages and never trusts a half-written or stale one."""

import json

import pytest

from steerflow.pipeline.stages import Stage, StageRunner


def make_stages(calls, fail_at=None):
    def runner(name, output=None):
        def run(ctx):
            calls.append(name)
            if name == fail_at:
                raise RuntimeError("boom")
            if output:
                (ctx.out_dir / output).write_text("x")
            return {"value": len(ctx.results), "name": name}
        return run

    return [Stage("a", "A", runner("a", "a.txt"), outputs=["a.txt"]),
            Stage("b", "B", runner("b")),
            Stage("c", "C", runner("c"))]


def quiet(_):
    pass


def test_second_run_reuses_every_finished_stage(tmp_path):
    calls = []
    first = StageRunner(tmp_path, make_stages(calls), {"k": 1}, log=quiet).run()
    again = StageRunner(tmp_path, make_stages(calls), {"k": 1}, log=quiet)
    second = again.run()
    assert calls == ["a", "b", "c"]
    assert second == first and again.reused == ["a", "b", "c"]
    assert first["c"]["value"] == 2  # each stage sees the results of the earlier ones


def test_interrupted_run_resumes_after_the_last_finished_stage(tmp_path):
    calls = []
    with pytest.raises(RuntimeError):
        StageRunner(tmp_path, make_stages(calls, fail_at="b"), {}, log=quiet).run()
    assert not (tmp_path / "stages" / "b.json").exists()
    runner = StageRunner(tmp_path, make_stages(calls), {}, log=quiet)
    runner.run()
    assert calls == ["a", "b", "b", "c"] and runner.reused == ["a"]


def test_stale_corrupt_or_incomplete_records_are_rerun(tmp_path):
    calls = []
    StageRunner(tmp_path, make_stages(calls), {"k": 1}, log=quiet).run()
    (tmp_path / "stages" / "b.json").write_text('{"status": "done", "result": ')  # half-written
    record = json.loads((tmp_path / "stages" / "c.json").read_text())
    record["status"] = "running"
    (tmp_path / "stages" / "c.json").write_text(json.dumps(record))
    (tmp_path / "a.txt").unlink()  # an output the record promised is gone
    calls.clear()
    StageRunner(tmp_path, make_stages(calls), {"k": 1}, log=quiet).run()
    assert calls == ["a", "b", "c"]
    calls.clear()
    StageRunner(tmp_path, make_stages(calls), {"k": 2}, log=quiet).run()  # settings changed
    assert calls == ["a", "b", "c"]


def test_a_changed_setting_reruns_the_first_stage_using_it_and_every_later_one(tmp_path):
    def stages(calls):
        made = make_stages(calls)
        made[0].settings, made[1].settings, made[2].settings = ["a_opt"], ["b_opt"], ["c_opt"]
        return made

    calls = []
    base = {"a_opt": 1, "b_opt": 1, "c_opt": 1}
    StageRunner(tmp_path, stages(calls), base, log=quiet).run()
    calls.clear()
    StageRunner(tmp_path, stages(calls), {**base, "c_opt": 2}, log=quiet).run()
    assert calls == ["c"]
    calls.clear()
    StageRunner(tmp_path, stages(calls), {**base, "b_opt": 2, "c_opt": 2}, log=quiet).run()
    assert calls == ["b", "c"]


def test_eta_ignores_a_stage_that_reused_earlier_work(tmp_path):
    def instant(ctx):
        return {}  # e.g. its training runs were already finished: no measure of speed

    stages = [Stage("a", "A", instant, estimate_s=100.0), Stage("b", "B", instant, estimate_s=100.0),
              Stage("c", "C", instant, estimate_s=100.0)]
    lines = []
    StageRunner(tmp_path, stages, {}, log=lines.append).run()
    etas = [line.split("ETA ~")[1].rstrip(")") for line in lines if "ETA" in line]
    # without the rule, a's instant finish would scale every later estimate to about 0 s
    assert etas == ["5.0 min", "3.3 min", "1.7 min"]


def test_a_stage_result_with_nan_is_recorded_as_valid_json_and_reused(tmp_path):
    """JSON has no NaN: the record says null (json.dumps would write a bare NaN) and reads back."""
    def refuse(name):
        raise ValueError(name)

    stage = Stage("m", "M", lambda ctx: {"loss": float("nan"), "ok": 1.0})
    StageRunner(tmp_path, [stage], {"k": 1}, log=quiet).run()
    record = json.loads(StageRunner(tmp_path, [stage], {"k": 1}, log=quiet)
                        .record_path(stage).read_text(), parse_constant=refuse)
    assert record["result"] == {"loss": None, "ok": 1.0}
    again = StageRunner(tmp_path, [stage], {"k": 1}, log=quiet)
    assert again.run() == {"m": {"loss": None, "ok": 1.0}} and again.reused == ["m"]
