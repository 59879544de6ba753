"""Resumable multi-stage runs (``steerflow demo``, ``steerflow reproduce``).

Each stage returns a JSON-serialisable dict. When it finishes, the dict is written atomically to
``OUT/stages/<name>.json`` together with a fingerprint of the run's settings. Re-running with the
same folder skips every stage whose record is complete, whose fingerprint matches and whose listed
output files exist; anything else (an interrupted stage, a changed setting, a deleted file) runs
again. A stage never trusts a record it cannot parse.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from steerflow.io import write_json


@dataclass
class Stage:
    """One step of a pipeline.

    Args:
        name: file-system-safe identifier (the record is ``stages/<name>.json``).
        title: what the progress display prints.
        run: ``run(context) -> dict`` does the work; ``context.results`` holds earlier stages'
            results by name.
        estimate_s: expected duration on the reference machine, for the overall ETA.
        outputs: paths (relative to the run folder) that must exist for a record to be reused.
        settings: the setting names this stage depends on (None: all of them). A stage's
            fingerprint covers these and the fingerprint of the stage before it, so changing a
            setting re-runs the first stage that uses it and everything after it.
    """

    name: str
    title: str
    run: Callable[["StageContext"], dict]
    estimate_s: float = 10.0
    outputs: Sequence[str] = ()
    settings: Optional[Sequence[str]] = None


@dataclass
class StageContext:
    out_dir: Path
    settings: dict
    results: dict[str, dict] = field(default_factory=dict)


def fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


class StageRunner:
    """Runs stages in order, reusing finished ones, and shows the stage, its number and the ETA."""

    def __init__(self, out_dir: Path, stages: Sequence[Stage], settings: dict,
                 log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)):
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate stage names in {names}")
        self.out_dir = Path(out_dir)
        self.stages = list(stages)
        self.context = StageContext(self.out_dir, settings)
        self.fingerprints: dict[str, str] = {}
        chain = ""
        for stage in self.stages:
            used = settings if stage.settings is None else {k: settings[k] for k in stage.settings}
            chain = fingerprint({"previous": chain, "stage": stage.name, "settings": used})
            self.fingerprints[stage.name] = chain
        self.log = log
        self.reused: list[str] = []
        self.ran: list[str] = []
        #: seconds each stage took when it ran (also for reused stages, from their records)
        self.elapsed: dict[str, float] = {}

    def record_path(self, stage: Stage) -> Path:
        return self.out_dir / "stages" / f"{stage.name}.json"

    def load_record(self, stage: Stage) -> Optional[dict]:
        """The stage's saved result if it can be trusted, else None."""
        path = self.record_path(stage)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("status") != "done":
            return None
        if record.get("fingerprint") != self.fingerprints[stage.name]:
            return None
        if not all((self.out_dir / p).exists() for p in stage.outputs):
            return None
        result = record.get("result")
        if not isinstance(result, dict):
            return None
        self.elapsed[stage.name] = float(record.get("elapsed_s") or 0.0)
        return result

    def run(self) -> dict[str, dict]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        total_estimate = sum(s.estimate_s for s in self.stages) or 1.0
        done_estimate, spent = 0.0, 0.0
        timed_estimate, timed_spent = 0.0, 0.0  # the stages that say how fast this machine is
        for i, stage in enumerate(self.stages, 1):
            record = self.load_record(stage)
            if record is not None:
                self.context.results[stage.name] = record
                self.reused.append(stage.name)
                done_estimate += stage.estimate_s
                self.log(f"[{i}/{len(self.stages)}] {stage.title}: reused from {self.record_path(stage)}")
                continue
            speed = timed_spent / timed_estimate if timed_spent > 0 and timed_estimate > 0 else 1.0
            remaining = (total_estimate - done_estimate) * speed
            self.log(f"[{i}/{len(self.stages)}] {stage.title} (overall ETA ~{_fmt(remaining)})")
            start = time.perf_counter()
            result = stage.run(self.context)
            elapsed = time.perf_counter() - start
            record = {"status": "done", "fingerprint": self.fingerprints[stage.name],
                      "elapsed_s": elapsed,
                      "result": result}
            write_json(self.record_path(stage), record)
            self.context.results[stage.name] = result
            self.ran.append(stage.name)
            self.elapsed[stage.name] = elapsed
            spent += elapsed
            done_estimate += stage.estimate_s
            if elapsed >= REUSED_WORK_FRACTION * stage.estimate_s:
                timed_spent += elapsed
                timed_estimate += stage.estimate_s
            self.log(f"      done in {_fmt(elapsed)}")
        return self.context.results


#: a stage that finishes in under this fraction of its estimate reused earlier work inside it (e.g.
#: finished training runs) and says nothing about this machine's speed: the ETA ignores it
REUSED_WORK_FRACTION = 0.1


def _fmt(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"
