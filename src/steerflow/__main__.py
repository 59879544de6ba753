"""``python -m steerflow`` (and ``torchrun -m steerflow train ...``)."""

import sys

from steerflow.cli.main import main

sys.exit(main())
