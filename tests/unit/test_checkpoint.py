"""papercrane.checkpoint: a retried attempt resumes from what the previous one saved."""

from __future__ import annotations

from pathlib import Path

import pytest

import papercrane.checkpoint as ckpt
from papercrane.backend.api import RunRequest
from papercrane.backend.config import Config
from papercrane.backend.engine import LocalEngine
from papercrane.backend.model import TaskConfig, TaskSpec

CODE = """
import papercrane.checkpoint as ckpt
done = ckpt.load(default=0) + 1
ckpt.save(done)
if done < 3:
    raise RuntimeError(f"failing after step {done}")
y = done
"""


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_retries_resume_from_the_last_checkpoint(tmp_path: Path, executor: str) -> None:
    engine = LocalEngine(Config(home=tmp_path))
    try:
        spec = TaskSpec(name="steps", code=CODE, inputs=(), outputs=("y",))
        config = TaskConfig(executor=executor, retries=5)
        result = engine.run_task(RunRequest(spec=spec, config=config, inputs={}, values={}))
        assert result.values == {"y": 3}
        assert result.execution.nodes["steps"].attempt == 3  # not 5: it resumed each time
    finally:
        engine.close()


def test_outside_a_task_it_says_so() -> None:
    with pytest.raises(RuntimeError, match="inside a %%task"):
        ckpt.load()
