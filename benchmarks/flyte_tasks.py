"""The flytekit tasks of the benchmarks, at module level as flytekit requires.

Imported only by ``bench_flytekit.py``, in the flytekit benchmark environment, after
``run.py`` has pointed HOME and TMPDIR at a temporary folder.
"""

import typing

import numpy as np
from flytekit import map_task, task, workflow

#: How many times each cached task's body really ran (a hit must not run it).
CALLS = {"a": 0, "b": 0, "c": 0, "m": 0}


@task
def inc(x: int) -> int:
    return x + 1


@workflow
def chain3(x: int) -> int:
    return inc(x=inc(x=inc(x=x)))


@task(cache=True, cache_version="1")
def t_a(x: int) -> int:
    CALLS["a"] += 1
    return x * 2


@task(cache=True, cache_version="1")
def t_b(a: int) -> typing.List[int]:  # noqa: UP006 (flytekit's type engine)
    CALLS["b"] += 1
    return [a] * 3


@task(cache=True, cache_version="1")
def t_c(b: typing.List[int]) -> typing.Dict[str, int]:  # noqa: UP006
    CALLS["c"] += 1
    return {"total": sum(b), "n": len(b)}


@task
def produce(n: int, seed: float) -> np.ndarray:
    return np.arange(n, dtype=np.float64) + seed


@task
def consume(a: np.ndarray) -> float:
    return float(a[-1])


@workflow
def handoff(n: int, seed: float) -> float:
    return consume(a=produce(n=n, seed=seed))


# -- workflows (issue 3) ------------------------------------------------------------------
#: Length of the chain benchmark (as papercrane's).
CHAIN = 50


@task(cache=True, cache_version="1")
def inc_cached(x: int) -> int:
    CALLS["m"] += 1
    return x + 1


@workflow
def map_inc(xs: typing.List[int]) -> typing.List[int]:  # noqa: UP006
    return map_task(inc)(x=xs)


@workflow
def map_inc_cached(xs: typing.List[int]) -> typing.List[int]:  # noqa: UP006
    return map_task(inc_cached)(x=xs)


@workflow
def chain50(x: int) -> int:
    for _ in range(CHAIN):
        x = inc(x=x)
    return x
