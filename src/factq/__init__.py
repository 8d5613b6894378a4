"""factq: slow computations behind a queue, with live results."""

__version__ = "0.1.0"
