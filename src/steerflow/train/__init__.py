"""Training: the loop (``train``), its config, objectives, resumable checkpoints, metrics, DDP.

``from steerflow.train import TrainConfig, train`` — see :mod:`steerflow.train.loop`.
"""

from steerflow.train.config import TrainConfig
from steerflow.train.loop import NonFiniteError, train
from steerflow.train.result import TrainResult
from steerflow.train.tasks import BatchSource, LMBatchSource

__all__ = ["TrainConfig", "TrainResult", "train", "NonFiniteError", "BatchSource", "LMBatchSource"]
