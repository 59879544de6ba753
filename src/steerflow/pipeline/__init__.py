"""Multi-stage, resumable runs: the machinery behind ``steerflow demo`` and ``steerflow reproduce``."""
