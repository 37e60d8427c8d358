"""Executors run one attempt each: ``inline`` (in this process), ``local`` (a subprocess
through the runner entrypoint); ``kubernetes`` comes later with the same interface."""

from .base import AttemptSpec, Executor, LogSink, executor_registry

__all__ = ["AttemptSpec", "Executor", "LogSink", "executor_registry"]
