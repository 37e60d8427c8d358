"""Task versions and cache keys: what changes them and what must not."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from papercrane.backend.engine import cache_key
from papercrane.backend.model import ArtifactRef, Environment, TaskSpec

CODE = """\
import math

def area(r):
    return math.pi * r ** 2

total = sum(area(r) for r in radii)
total
"""

REFORMATTED = """\
# compute the total area
import math


def area(r):   # one circle
    return (math.pi * r**2)

total = sum(
    area(r)
    for r in radii
)  # trailing comment
total ;
"""

ENV = Environment(python="cpython-3.11.7", packages={"numpy": "2.0.0"})


def spec(**changes: Any) -> TaskSpec:
    base = TaskSpec(
        name="areas",
        code=CODE,
        inputs=("radii",),
        outputs=("area", "total"),
        input_types={"radii": "list"},
        imports=("np=numpy",),
        environment=ENV,
        display_last=True,
    )
    return dataclasses.replace(base, **changes)


def ref(fingerprint: str, digest: str = "h" * 64) -> ArtifactRef:
    return ArtifactRef(
        id=fingerprint,
        hash=digest,
        uri=f"artifacts/{digest[:2]}/{digest}",
        size=10,
        serializer="json",
        python_type="list",
    )


# -- task version ------------------------------------------------------------------------------


def test_version_is_a_stable_sha256() -> None:
    assert spec().version() == spec().version()
    assert len(spec().version()) == 64
    int(spec().version(), 16)


def test_reformatting_and_comments_keep_the_version() -> None:
    # The `;` after `total` does not change the AST; whether the value is shown is the
    # separate display_last field, which capture sets and which is held equal here.
    assert spec(code=REFORMATTED).version() == spec().version()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("r ** 2", "r ** 3"),
        ("math.pi", "math.tau"),
        ("sum(", "max("),
        ("def area(r)", "def area(radius)"),
        ("total\n", "print(total)\n"),
    ],
)
def test_changed_code_changes_the_version(old: str, new: str) -> None:
    assert CODE.count(old) >= 1
    assert spec(code=CODE.replace(old, new, 1)).version() != spec().version()


def test_changed_string_constant_changes_the_version() -> None:
    assert spec(code='x = "a"').version() != spec(code='x = "b"').version()


def test_renaming_the_task_changes_version_but_keeps_cache_identity() -> None:
    renamed = spec(name="circle_areas")
    assert renamed.version() != spec().version()
    assert renamed.cache_identity("") == spec().cache_identity("")


@pytest.mark.parametrize(
    "changes",
    [
        {"outputs": ("total",)},
        {"outputs": ("area", "total", "mean")},
        {"inputs": ("radii", "scale")},
        {"display_last": False},
        {"imports": ("np=numpy", "pd=pandas")},
        {"imports": ("np=jax.numpy",)},
        {"environment": Environment(python="cpython-3.11.7", packages={"numpy": "2.0.1"})},
        {"environment": Environment(python="cpython-3.12.1", packages={"numpy": "2.0.0"})},
        {
            "environment": Environment(
                python="cpython-3.11.7", packages={"numpy": "2.0.0"}, local_modules={"h": "ab"}
            )
        },
    ],
    ids=lambda c: next(iter(c)),
)
def test_interface_imports_and_environment_change_version_and_cache(
    changes: dict[str, Any],
) -> None:
    changed = spec(**changes)
    assert changed.version() != spec().version()
    assert changed.cache_identity("") != spec().cache_identity("")


@pytest.mark.parametrize(
    "changes",
    [
        {"inputs": ("radii",), "input_types": {"radii": "list", "unused": "int"}},
        {"input_types": {"radii": "numpy.ndarray"}},
        {"imports": ("np=numpy",)},
        {"source": "%%task areas\n" + CODE},
        {"first_line": 7},
        {"sources": {"<cell-1>": ("In[3]", "def helper(): ...")}},
    ],
    ids=["extra-type", "input-type", "same-imports", "source", "first_line", "sources"],
)
def test_presentation_details_keep_the_version(changes: dict[str, Any]) -> None:
    assert spec(**changes).version() == spec().version()


def test_output_order_does_not_matter() -> None:
    # Outputs are bound back by name: ``--outputs area,total`` and ``--outputs total,area``
    # run the same cell the same way, so they share one cache entry.
    reordered = spec(outputs=("total", "area"))
    assert reordered.version() == spec().version()
    assert reordered.cache_identity("") == spec().cache_identity("")
    assert spec(outputs=("area", "total", "area")).cache_identity("") == spec().cache_identity("")


def test_input_and_import_order_do_not_matter() -> None:
    a = spec(inputs=("a", "b"), imports=("x=json", "y=math"))
    b = spec(inputs=("b", "a"), imports=("y=math", "x=json"))
    assert a.version() == b.version()


def test_version_survives_serialization() -> None:
    original = spec(sources={"<cell-1>": ("In[1]", "x = 1")})
    again = TaskSpec.from_dict(original.to_dict())
    assert again == original
    assert again.version() == original.version()


def test_syntax_error_in_code_raises() -> None:
    with pytest.raises(SyntaxError):
        spec(code="x = (").version()


# -- cache key --------------------------------------------------------------------------------


def test_cache_key_is_stable() -> None:
    inputs = {"radii": ref("f1")}
    assert cache_key(spec(), "", inputs) == cache_key(spec(), "", dict(inputs))


def test_cache_version_changes_the_cache_key() -> None:
    inputs = {"radii": ref("f1")}
    keys = {cache_key(spec(), v, inputs) for v in ("", "1", "2")}
    assert len(keys) == 3


def test_cache_key_follows_code_but_not_formatting() -> None:
    inputs = {"radii": ref("f1")}
    assert cache_key(spec(code=REFORMATTED), "", inputs) == cache_key(spec(), "", inputs)
    changed = spec(code=CODE.replace("r ** 2", "r ** 3"))
    assert cache_key(changed, "", inputs) != cache_key(spec(), "", inputs)


def test_renaming_the_task_keeps_the_cache_key() -> None:
    inputs = {"radii": ref("f1")}
    assert cache_key(spec(name="renamed"), "v1", inputs) == cache_key(spec(), "v1", inputs)


def test_input_fingerprints_change_the_cache_key() -> None:
    assert cache_key(spec(), "", {"radii": ref("f1")}) != cache_key(
        spec(), "", {"radii": ref("f2")}
    )


def test_cache_key_uses_fingerprints_not_stored_bytes() -> None:
    # A function re-pickled to new bytes keeps its fingerprint, so the cache must hit.
    a = cache_key(spec(), "", {"radii": ref("f1", "a" * 64)})
    b = cache_key(spec(), "", {"radii": ref("f1", "b" * 64)})
    assert a == b


def test_cache_key_binds_fingerprints_to_input_names() -> None:
    two = spec(inputs=("a", "b"))
    swapped = cache_key(two, "", {"a": ref("f2"), "b": ref("f1")})
    assert cache_key(two, "", {"a": ref("f1"), "b": ref("f2")}) != swapped
    reordered = {"b": ref("f1"), "a": ref("f2")}
    assert cache_key(two, "", reordered) == swapped


# -- a re-run cell reuses its computed identity ---------------------------------------------------
def test_a_rerun_with_a_new_cell_label_keeps_the_version_without_hashing_again() -> None:
    first = spec(sources={"<cell areas>": ("In[3]", "")})
    version = first.version()
    first.cache_identity("v1")
    again = spec(sources={"<cell areas>": ("In[4]", "")}).reusing(first)
    assert again.sources == {"<cell areas>": ("In[4]", "")}  # its own label is kept
    assert "_version" in again.__dict__ and again.version() == version
    assert again.cache_identity("v1") == first.cache_identity("v1")
    assert again.version() == spec(sources={"<cell areas>": ("In[4]", "")}).version()


def test_a_changed_task_does_not_reuse_the_earlier_identity() -> None:
    first = spec()
    first.version()
    edited = spec(code=CODE.replace("pi", "tau")).reusing(first)
    assert "_version" not in edited.__dict__
    assert edited.version() != first.version()
    assert spec().reusing(first) is first and spec().reusing(None).version() == first.version()
