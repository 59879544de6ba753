"""Command-line interface (``steerflow --help``)."""
