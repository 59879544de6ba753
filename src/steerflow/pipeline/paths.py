"""Where each stage of the end-to-end run writes, relative to the run folder. The stages
(:mod:`steerflow.pipeline.demo`) write there and the report (:mod:`steerflow.pipeline.report`)
reads from there."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunPaths:
    """Where each stage writes, relative to the run folder."""

    lm: str = "lm"
    steered: str = "steered"
    #: the steering stage's model when a distillation stage follows it
    conditional: str = "steer/conditional"
    #: DExperts' expert and anti-expert (``--task expert`` on positive / negative SST-2)
    expert_positive: str = "experts/positive"
    expert_negative: str = "experts/negative"
    steering: str = "steering"
    invariance: str = "invariance"
    probe: str = "probe"
    flow: str = "flow"
    bench: str = "bench"
    contractive: str = "lm/contractive"

    @property
    def baseline(self) -> str:
        return f"{self.lm}/baseline"

    @property
    def hybrid(self) -> str:
        return f"{self.lm}/hybrid"


PATHS = RunPaths()
