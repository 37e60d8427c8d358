"""What a task outside the kernel displays: kept as the notebook would show it, with
``display_id`` handles that work as IPython's do, and a map's elements joined in order."""

from __future__ import annotations

import pickle
from typing import Any

from papercrane.backend.displays import MAX_DISPLAY_BYTES, Display, joined_displays


def texts(displayed: list[dict[str, Any]]) -> list[str]:
    return [b["data"]["text/plain"] for b in displayed]


def test_a_display_with_an_id_is_shown_as_last_updated_where_it_was_first_shown() -> None:
    kept: list[dict[str, Any]] = []
    display = Display(kept)
    progress = display("0 of 3", display_id=True)
    assert display("before", "after") is None  # (no id: no handle, as in IPython)
    for done in range(1, 4):
        progress.update(f"{done} of 3")
    display("ignored", display_id="never-shown", update=True)  # nothing to update
    assert texts(kept) == ["'3 of 3'", "'before'", "'after'"]


def test_an_id_shown_twice_is_updated_in_both_places() -> None:
    kept: list[dict[str, Any]] = []
    display = Display(kept)
    display("a", display_id="status")
    handle = display("b", display_id="status")
    handle.update("done")
    handle.display("again")
    assert texts(kept) == ["'done'", "'done'", "'again'"]


def test_a_handle_left_as_an_output_goes_back_as_ipythons_handle() -> None:
    from IPython.display import DisplayHandle

    handle = Display([])("x", display_id="abc")
    back = pickle.loads(pickle.dumps(handle))
    assert type(back) is DisplayHandle and back.display_id == "abc"


def test_a_maps_displays_are_joined_in_order_and_cut_at_the_limit() -> None:
    small = {"displayed": [{"data": {"text/plain": "'1'"}, "metadata": {}}]}
    assert joined_displays([None, small, {"data": {}}, small]) == {
        "data": {},
        "metadata": {},
        "displayed": small["displayed"] * 2,
    }
    assert joined_displays([None, {"data": {"text/plain": "2"}}]) is None
    big = {"displayed": [{"data": {"text/plain": "x" * (MAX_DISPLAY_BYTES // 3)}, "metadata": {}}]}
    joined = joined_displays([big] * 5)["displayed"]
    assert len(joined) == 3 and joined[-1]["data"]["text/plain"].startswith(
        "papercrane: 3 more display() output(s)"
    )
