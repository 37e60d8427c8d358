"""The scheduler's deadline helper (``deadlines.Deadlines``): a job runs once its delay has
passed unless cancelled first, whether the helper thread was waiting for a
notification, lingering after an earlier job, or waiting for a later deadline."""

from __future__ import annotations

import threading
import time

from papercrane.backend.deadlines import Deadlines


def _job(log: list[tuple[str, float]], name: str, done: threading.Event | None = None):  # type: ignore[no-untyped-def]
    def fn() -> None:
        log.append((name, time.monotonic()))
        if done is not None:
            done.set()

    return fn


def test_a_job_runs_after_its_delay_and_a_cancelled_one_never() -> None:
    deadlines = Deadlines()
    log: list[tuple[str, float]] = []
    done = threading.Event()
    armed = time.monotonic()
    dropped = deadlines.arm(0.05, _job(log, "dropped"))
    deadlines.cancel(dropped)
    deadlines.arm(0.1, _job(log, "kept", done))
    assert done.wait(10)
    time.sleep(0.1)  # past both deadlines
    assert [name for name, _ in log] == ["kept"]
    assert log[0][1] - armed >= 0.1


def test_jobs_armed_while_the_helper_lingers_or_waits_run_in_deadline_order() -> None:
    """Quick jobs armed and cancelled one after another leave the helper lingering, not
    notified; a job armed then must still run, and a shorter delay armed after a
    longer one runs first."""
    deadlines = Deadlines()
    log: list[tuple[str, float]] = []
    for _ in range(20):  # quick tasks: armed, then cancelled before they are due
        deadlines.cancel(deadlines.arm(0.05, _job(log, "quick")))
        time.sleep(0.002)
    done = threading.Event()
    armed = time.monotonic()
    deadlines.arm(0.3, _job(log, "long", done))
    deadlines.arm(0.05, _job(log, "short"))
    assert done.wait(10)
    assert [name for name, _ in log] == ["short", "long"]
    assert log[0][1] - armed >= 0.05 and log[1][1] - armed >= 0.3
    # Idle again (nothing armed for longer than any delay): a new job still runs.
    time.sleep(0.2)
    again = threading.Event()
    deadlines.arm(0.05, _job(log, "later", again))
    assert again.wait(10)
    assert [name for name, _ in log] == ["short", "long", "later"]
