"""The task run widget's comm messages, without a kernel."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import comm
import pytest

from papercrane.backend.model import Event, EventKind, ExecutionState, Status
from papercrane.widgets import RunView, RunWidget, render_html, shared_parts


class _Recorded(comm.DummyComm):
    """The kernel's side of a comm (there is no kernel here): keeps what was sent."""

    sent: list[tuple[str, Any]] = []

    def publish_msg(self, msg_type: str, data: Any = None, *args: Any, **kwargs: Any) -> None:
        self.sent.append((msg_type, data))


@pytest.fixture
def sent() -> Iterator[list[tuple[str, Any]]]:
    before = comm.create_comm
    comm.create_comm = _Recorded  # what ipykernel does with its own Comm class
    _Recorded.sent = []
    try:
        yield _Recorded.sent
    finally:
        comm.create_comm = before


def test_run_widgets_open_like_an_ipywidgets_html(sent: list[tuple[str, Any]]) -> None:
    """The kept state (``_run_html_class``) sends the same ``comm_open`` as a fresh
    ``ipywidgets.HTML`` with the same value, layout and style, run after run."""
    import ipywidgets

    parts = shared_parts()
    for name in ("first", "second", "third"):
        view = RunView(name=name, version="0" * 64, executor="inline", max_attempts=1)
        run = RunWidget(view, parts=parts)
        run.show()
        ours = sent[-1]
        plain = ipywidgets.HTML(value=run.widget.value, **parts)
        theirs = sent[-1]
        assert ours[0] == theirs[0] == "comm_open"
        assert ours[1] == theirs[1]
        assert name in ours[1]["state"]["value"]
        assert run.widget.model_id != plain.model_id
        assert run.widget.get_state() == {**plain.get_state(), "value": run.widget.value}


def test_new_shared_parts_are_picked_up(sent: list[tuple[str, Any]]) -> None:
    view = RunView(name="t", version="0" * 64, executor="inline", max_attempts=1)
    states = []
    for _ in range(2):
        parts = shared_parts()
        RunWidget(view, parts=parts).show()
        states.append(sent[-1][1]["state"])
        assert states[-1]["layout"] == f"IPY_MODEL_{parts['layout'].model_id}"
        assert states[-1]["style"] == f"IPY_MODEL_{parts['style'].model_id}"
    assert states[0]["layout"] != states[1]["layout"]


def test_updates_reach_the_front_end(sent: list[tuple[str, Any]]) -> None:
    view = RunView(name="t", version="0" * 64, executor="inline", max_attempts=1)
    run = RunWidget(view, parts=shared_parts())
    run.show()
    view.started -= 5  # so that the duration shown changes
    run.finish()
    msg_type, data = sent[-1]
    assert msg_type == "comm_msg" and data["method"] == "update"
    assert data["state"]["value"] == run.widget.value


def test_a_run_never_shown_is_created_once_at_the_end(sent: list[tuple[str, Any]]) -> None:
    """A cache hit: no event before the end, so one widget with the final state."""
    view = RunView(name="t", version="0" * 64, executor="inline", max_attempts=1)
    run = RunWidget(view, parts=shared_parts())
    before = len(sent)
    view.started -= 5
    run.finish()
    assert run.shown
    assert [m for m, _ in sent[before:]] == ["comm_open"]
    assert sent[-1][1]["state"]["value"] == render_html(view) == run.widget.value


def test_first_log_line_shows_the_widget_first(
    sent: list[tuple[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    view = RunView(name="t", version="0" * 64, executor="local", max_attempts=1)
    run = RunWidget(view, parts=shared_parts())
    assert not run.shown
    run.on_log("stdout", "hello\n")
    assert run.shown and capsys.readouterr().out.endswith("hello\n")


def test_run_widgets_take_other_keywords_as_ipywidgets_html_does(
    sent: list[tuple[str, Any]],
) -> None:
    """The quick constructor only takes a str value with the shared layout and style;
    anything else goes through ``ipywidgets.HTML``'s own (validated) constructor."""
    import ipywidgets
    import traitlets

    from papercrane.widgets import _run_html_class

    cls = _run_html_class()
    parts = shared_parts()
    with pytest.raises(traitlets.TraitError):
        ipywidgets.HTML(value=3, **parts)
    with pytest.raises(traitlets.TraitError):
        cls(value=3, **parts)
    alone = cls(value="w")  # its own layout and style, as ipywidgets.HTML makes them
    assert alone.layout is not parts["layout"] and alone.value == "w"
    quick = cls(value="q", **parts)
    assert quick.layout is parts["layout"] and quick.style is parts["style"]
    quick.value = "changed"  # observed like any trait once the comm is open
    assert sent[-1][1]["method"] == "update" and sent[-1][1]["state"] == {"value": "changed"}


def test_rendered_rows_escape_keys_and_values() -> None:
    """The summary's rows, their fixed keys' start kept per process, read as
    ``_ROW`` filled with both escaped."""
    import html

    from papercrane.widgets import _ROW

    view = RunView(name="<t>", version="0" * 64, executor="a&b", max_attempts=1)
    text = render_html(view)
    for key, value in view.summary()[:2]:
        assert _ROW.format(html.escape(key), html.escape(value)) in text
    assert "a&amp;b" in text and "&lt;t&gt;" in text


def test_a_shown_value_sends_what_an_assignment_sends(sent: list[tuple[str, Any]]) -> None:
    """``show_value`` (the run's updates) sends the ``update`` message that assigning
    ``value`` sends from an ``ipywidgets.HTML``; an equal value sends nothing."""
    import ipywidgets

    from papercrane.widgets import _run_html_class

    parts = shared_parts()
    ours = _run_html_class()(value="a", **parts)
    ours.show_value("b")
    mine = sent[-1]
    plain = ipywidgets.HTML(value="a", **parts)
    plain.value = "b"
    assert mine == sent[-1] and mine[0] == "comm_msg"
    assert ours.value == "b" and ours.get_state("value") == {"value": "b"}
    before = len(sent)
    ours.show_value("b")
    assert len(sent) == before


def test_a_shown_value_still_reaches_observers(sent: list[tuple[str, Any]]) -> None:
    """Anything observing ``value`` (or holding its sync) gets the assignment itself."""
    from papercrane.widgets import _run_html_class

    widget = _run_html_class()(value="a", **shared_parts())
    seen: list[str] = []
    widget.observe(lambda change: seen.append(change["new"]), names="value")
    widget.show_value("b")
    assert seen == ["b"] and sent[-1][1]["state"] == {"value": "b"}
    with widget.hold_sync():
        widget.show_value("c")
        assert sent[-1][1]["state"] == {"value": "b"}
    assert seen == ["b", "c"] and sent[-1][1]["state"] == {"value": "c"}


def test_a_value_from_the_front_end_is_not_echoed(sent: list[tuple[str, Any]]) -> None:
    from papercrane.widgets import _run_html_class

    widget = _run_html_class()(value="a", **shared_parts())
    before = len(sent)
    with widget._lock_property(value="b"):  # as while handling the front end's update
        widget.show_value("b")
    assert widget.value == "b" and len(sent) == before


def test_comm_ids_look_like_uuid4() -> None:
    import uuid

    from papercrane.widgets import new_id

    ids = {new_id() for _ in range(200)}
    assert len(ids) == 200
    for text in ids:
        parsed = uuid.UUID(hex=text)
        assert parsed.hex == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_run_widgets_answer_the_front_end(sent: list[tuple[str, Any]]) -> None:
    """The comm a run widget opens is wired as ``Widget.comm``'s assignment wires it:
    the widget is registered and handles the front end's messages."""
    from ipywidgets.widgets.widget import _instances

    from papercrane.widgets import _run_html_class

    widget = _run_html_class()(value="a", **shared_parts())
    assert _instances[widget.model_id] is widget and widget.comm.comm_id == widget.model_id
    widget.comm.handle_msg({"content": {"data": {"method": "request_state"}}, "buffers": []})
    assert sent[-1][1]["method"] == "update" and sent[-1][1]["state"]["value"] == "a"
    widget.comm.handle_msg(
        {"content": {"data": {"method": "update", "state": {"value": "b"}}}, "buffers": []}
    )
    assert widget.value == "b"
    model_id = widget.model_id
    widget.close()
    assert model_id not in _instances and widget.comm is None


def test_displayed_and_updated_as_ipython_display_does(sent: list[tuple[str, Any]]) -> None:
    """A run's bundle reaches the shell's display publisher with the arguments
    ``display(bundle, raw=True, display_id=...)`` and ``DisplayHandle.update`` give it."""
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.display import display

    published: list[dict[str, Any]] = []

    class Recorder(DisplayPublisher):  # the boundary: what a kernel would send
        def publish(self, data: Any, metadata: Any = None, **kwargs: Any) -> None:
            published.append({"data": data, "metadata": metadata, **kwargs})

    created = not InteractiveShell.initialized()
    shell = InteractiveShell.instance()
    before = shell.display_pub
    shell.display_pub = Recorder(shell=shell)
    try:
        view = RunView(name="t", version="0" * 64, executor="inline", max_attempts=1)
        run = RunWidget(view, parts=shared_parts())
        run.show()
        run.finish()
        ours = list(published)
        published.clear()
        display_id = ours[0]["transient"]["display_id"]
        handle = display(ours[0]["data"], raw=True, display_id=display_id)
        handle.update(ours[1]["data"], raw=True)
    finally:
        shell.display_pub = before
        if created:
            InteractiveShell.clear_instance()
    assert ours == published and len(ours) == 2
    assert ours[1]["update"] is True and ours[1]["transient"] == {"display_id": display_id}
    assert len(display_id) == 32 and int(display_id, 16) >= 0


def test_an_unstarted_run_renders_as_it_would_afresh() -> None:
    """``render`` remembers runs with no event yet by name and summary: the same text
    as rendering them anew, and another summary renders anew."""
    from papercrane.widgets import render, render_text

    for executor in ("inline", "inline", "local"):
        view = RunView(name="<t>", version="1" * 64, executor=executor, max_attempts=2)
        view.ended = view.started  # (a fixed duration)
        assert render(view) == (render_html(view), render_text(view))
        assert executor in render(view)[1] and "queued" in render(view)[1]


def test_a_batch_of_events_shows_the_run_once_with_its_state(
    sent: list[tuple[str, Any]],
) -> None:
    """A map commits thousands of events at once: the widget takes them as one batch
    (``on_events``), shown with the run's live state as one ``on_event`` per event
    would leave it (the first shows it; the rest fall within its 50 ms between
    renders), without building the batch's other events."""
    view = RunView(name="t", version="0" * 64, executor="inline", max_attempts=1)
    run = RunWidget(view, parts=shared_parts())
    state = ExecutionState(id="e", status=Status.RUNNING)
    before = len(sent)
    run.on_events(iter(()), state)  # (an empty batch changes nothing)
    assert not run.shown and len(sent) == before
    built: list[int] = []

    def events() -> Iterator[Event]:
        for seq in range(1, 1001):
            built.append(seq)
            yield Event("e", EventKind.ATTEMPT_STARTED, f"m[{seq}]", 1, seq=seq)

    run.on_events(events(), state)
    assert run.shown and view.state is state and built == [1]
    assert [m for m, _ in sent[before:]] == ["comm_open"]
    ended = ExecutionState(id="e", status=Status.SUCCEEDED)
    run.on_events(events(), ended)  # the end is rendered once, by ``finish``
    assert view.state is ended and [m for m, _ in sent[before:]] == ["comm_open"]


def test_other_ipywidgets_versions_get_a_plain_html(
    sent: list[tuple[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quick paths lean on ipywidgets 8's and traitlets 5's internals; with another
    major version a run is shown by a plain ``ipywidgets.HTML``, updated by assignment."""
    import ipywidgets

    import papercrane.widgets as widgets

    monkeypatch.setattr(widgets, "_html_class", None)
    monkeypatch.setattr(ipywidgets, "__version__", "9.0.0")
    assert widgets._run_html_class() is ipywidgets.HTML
    view = RunView(name="t", version="0" * 64, executor="inline", max_attempts=1)
    run = RunWidget(view, parts=shared_parts())
    run.show()
    assert type(run.widget) is ipywidgets.HTML and sent[-1][0] == "comm_open"
    ended = ExecutionState(id="e", status=Status.SUCCEEDED)
    run.on_events(iter([Event("e", EventKind.EXECUTION_SUCCEEDED, seq=1)]), ended)
    run.finish()
    assert sent[-1][0] == "comm_msg" and "succeeded" in sent[-1][1]["state"]["value"]
    monkeypatch.setattr(widgets, "_html_class", None)  # (the next test builds it again)


def test_text_lists_outputs_with_type_and_size_and_imports_by_module() -> None:
    from papercrane.backend.model import ArtifactRef
    from papercrane.widgets import render_text

    ref = ArtifactRef(
        id="a" * 64,
        hash="b" * 64,
        uri="artifacts/aa",
        size=3,
        serializer="json",
        python_type="int",
        preview="225",
    )
    view = RunView(name="t", version="0" * 64, executor="inline", max_attempts=1)
    view.outputs = {"split": ref}
    view.references = {"np": "numpy"}
    text = render_text(view)
    assert "  -> split (int, 3 B) 225" in text
    assert "  -> np (import) numpy" in text


def _run_view(
    tmp_path: Any, spec: Any, config: Any, values: dict[str, Any], map_over: Any = None
) -> tuple[RunView, str]:
    """Run a task on a real engine; the widget's view of its recorded state, and its
    status."""
    from papercrane.backend.api import RunRequest
    from papercrane.backend.config import Config
    from papercrane.backend.engine import LocalEngine
    from papercrane.backend.errors import TaskFailed

    engine = LocalEngine(Config(home=tmp_path / "home"))
    try:
        inputs = {n: engine.put_value(v, n) for n, v in values.items()}
        request = RunRequest(spec=spec, config=config, inputs=inputs, values=values, map=map_over)
        try:
            execution_id = engine.run_task(request).execution.id
        except TaskFailed as failed:
            execution_id = failed.execution_id
        state = engine.execution(execution_id)
    finally:
        engine.close()
    view = RunView(spec.name, "0" * 64, config.executor, config.retries + 1, state=state)
    return view, state.status.value


def _map_view(tmp_path: Any, code: str, items: list[Any], ratio: float, cache: bool = False):
    from papercrane.backend.model import TaskConfig, TaskSpec
    from papercrane.backend.workflow import MapSpec

    spec = TaskSpec(name="inv", code=code, inputs=("v",), outputs=("r",))
    config = TaskConfig(executor="inline", cache=cache)
    return _run_view(tmp_path, spec, config, {"vals": items}, MapSpec("vals", "v", ratio))


def test_a_map_with_failed_elements_says_which_and_why(tmp_path: Any) -> None:
    """A map that succeeded although elements failed (``--min-success-ratio``) says so,
    in the HTML and the text: how many succeeded, which failed and why, and that their
    outputs are None."""
    from papercrane.widgets import render

    view, status = _map_view(tmp_path, "r = 10 / v", [1, 2, 0, 4], 0.5)
    assert status == "succeeded"
    html_text, text = render(view)
    expected = (
        "3 of 4 elements succeeded; element 2 failed: ZeroDivisionError: division by zero "
        "(its outputs are None)"
    )
    assert f"  elements: {expected}" in text.splitlines()
    assert expected in html_text
    view, _ = _map_view(tmp_path, "r = 10 / v", [0, 1, 0], 0.0)
    assert (
        "  elements: 1 of 3 elements succeeded; elements 0, 2 failed (their outputs are None); "
        "element 0: ZeroDivisionError: division by zero"
    ) in render(view)[1].splitlines()


def test_an_empty_cached_map_shows_its_cache_as_on(tmp_path: Any) -> None:
    from papercrane.widgets import render_text

    view, status = _map_view(tmp_path, "r = v", [], 1.0, cache=True)
    assert status == "succeeded"
    lines = render_text(view).splitlines()
    assert "  cache: 0 of 0 elements cached" in lines
    assert not any(line.startswith("  elements:") for line in lines)


def test_retries_after_system_errors_are_counted_apart(tmp_path: Any) -> None:
    """A task process lost three times (system errors: two retries on their own
    budget) made one attempt of the one ``--retries 0`` allows, not "3 of 1"."""
    from papercrane.backend.model import TaskConfig, TaskSpec
    from papercrane.widgets import render_text

    spec = TaskSpec(name="lost", code="import os\nos._exit(3)", inputs=(), outputs=())
    view, status = _run_view(tmp_path, spec, TaskConfig(executor="local"), {})
    assert status == "failed"
    assert "  attempt: 1 of 1 (+2 retried after system errors)" in render_text(view).splitlines()


def test_a_workflow_rows_long_error_is_cut_with_an_ellipsis() -> None:
    """A node's detail in the workflow widget stays one line: a long error is cut, and
    shows it was (not "… which did not a")."""
    from papercrane.backend.model import ErrorInfo, ErrorKind, NodeState
    from papercrane.workflow_widget import _detail

    message = "node 'total' reads 'r' from 'sq', which did not assign it; assign it in 'sq'"
    node = NodeState(node="total", status=Status.FAILED)
    node.error = ErrorInfo(ErrorKind.USER, "UserError", message)
    detail = _detail(node)
    assert len(detail) <= 60 and detail.endswith("which did not…")
    assert detail.startswith("UserError: node 'total' reads 'r' from 'sq',")
    node.error = ErrorInfo(ErrorKind.USER, "ValueError", "short")
    assert _detail(node) == "ValueError: short"


def test_a_pods_scheduling_reason_is_shown_even_right_after_a_render(
    sent: list[tuple[str, Any]],
) -> None:
    """The scheduler says why a pod waits a moment after it is "pending", within the
    50 ms between renders, and then nothing changes for minutes: that reason is sent."""
    from papercrane.backend.model import NodeState

    view = RunView(name="t", version="0" * 64, executor="kubernetes", max_attempts=1)
    run = RunWidget(view, parts=shared_parts())
    node = NodeState("t", status=Status.RUNNING, attempt=1, where="pending")
    state = ExecutionState(id="e", status=Status.RUNNING, nodes={"t": node})
    status = Event("e", EventKind.ATTEMPT_STATUS, "t", 1, seq=1)
    run.on_event(status, state)
    assert run.shown
    node.where = "pending: Unschedulable: 0/1 nodes are available: 1 Insufficient cpu."
    run.on_event(status, state)  # (at once: well within 50 ms)
    msg_type, data = sent[-1]
    assert msg_type == "comm_msg" and "Insufficient cpu" in data["state"]["value"]
    before = len(sent)
    run.on_event(status, state)  # the same state line again: still throttled
    assert len(sent) == before


def test_the_workflow_widget_shows_a_nodes_new_state_line_at_once() -> None:
    """As the task widget: a pod's scheduling reason, right after "pending"."""
    from papercrane.backend.model import NodeState
    from papercrane.workflow_widget import WorkflowWidget

    widget = WorkflowWidget(None, live=True)
    node = NodeState("fit", status=Status.RUNNING, attempt=1, where="pending")
    state = ExecutionState(id="e", status=Status.RUNNING, nodes={"fit": node})
    status = Event("e", EventKind.ATTEMPT_STATUS, "fit", 1, seq=1)
    widget.on_event(status, state)
    node.where = "pending: Unschedulable: 1 Insufficient cpu"
    widget.on_event(status, state)  # (at once: well within 0.1 s)
    assert "Insufficient cpu" in widget.widget.value


def test_a_failure_that_would_repeat_says_why_it_was_not_retried() -> None:
    """``--retries 2``, and a missing image (the executor marks it ``retryable: False``):
    one attempt, and the widget says why not three, as recorded in the event."""
    from papercrane.backend.model import ErrorInfo, NodeState
    from papercrane.backend.projection import apply
    from papercrane.widgets import render_text

    state = ExecutionState(id="e")
    error = {
        "kind": "user",
        "type": "ImageUnavailable",
        "message": "image x:1 is not on the node",
        "traceback": "",
        "retryable": False,
    }
    for seq, (kind, node, attempt, payload) in enumerate(
        [
            (EventKind.EXECUTION_CREATED, "", 0, {"name": "t", "kind": "task"}),
            (EventKind.ATTEMPT_STARTED, "t", 1, {}),
            (EventKind.ATTEMPT_FAILED, "t", 1, {"error": error}),
        ],
        start=1,
    ):
        apply(state, Event("e", kind, node, attempt, payload=payload, seq=seq))
    failed: NodeState = state.nodes["t"]
    assert failed.error == ErrorInfo.from_dict(error) and not failed.error.retryable
    assert failed.error.to_dict()["retryable"] is False
    view = RunView(name="t", version="v" * 12, executor="kubernetes", max_attempts=3, state=state)
    lines = render_text(view).splitlines()
    assert "  attempt: 1 of 3 (not retried: another attempt would fail the same way)" in lines
    # An ordinary failure says nothing of the kind.
    retried = ErrorInfo.from_dict({**error, "retryable": True})
    assert retried.retryable and "retryable" not in retried.to_dict()


def test_the_executor_row_names_the_executor_its_attempt_ran_on() -> None:
    """A cell naming no executor shows "default" until its attempt starts; then the one
    the engine (a server's ``--executor``) chose, which its attempt_started event names.
    An older store's event without it leaves "default"."""
    from papercrane.backend.projection import apply

    view = RunView(name="t", version="v" * 12, executor="default", max_attempts=1)
    state = ExecutionState(id="e1")
    apply(state, Event("e1", EventKind.EXECUTION_CREATED, "", 0, {"kind": "task"}, 1.0, 1))
    apply(state, Event("e1", EventKind.NODE_QUEUED, "t", 0, {}, 1.0, 2))
    view.state = state
    assert ("executor", "default") in view.summary()
    apply(state, Event("e1", EventKind.ATTEMPT_STARTED, "t", 1, {"executor": "kubernetes"}, 2.0, 3))
    assert ("executor", "kubernetes") in view.summary()
    old = ExecutionState(id="e2")
    apply(old, Event("e2", EventKind.ATTEMPT_STARTED, "t", 1, {}, 2.0, 1))
    view.state = old
    assert ("executor", "default") in view.summary()


def test_an_interrupted_run_whose_end_was_not_heard_ends_aborted() -> None:
    """Interrupted while its execution runs elsewhere (a server still stopping it): the
    widget ends aborted with why, not "running" for ever; an execution that did end
    (failed, say) keeps its own status."""
    from papercrane.backend.errors import ExecutionAborted
    from papercrane.backend.projection import apply

    view = RunView(name="t", version="v" * 12, executor="default", max_attempts=1)
    state = ExecutionState(id="e1")
    apply(state, Event("e1", EventKind.ATTEMPT_STARTED, "t", 1, {"executor": "local"}, 2.0, 1))
    view.state = state
    widget = RunWidget(view, live=False)
    widget.refuse(ExecutionAborted("execution e1 was interrupted"))
    assert view.status is Status.ABORTED
    assert "execution e1 was interrupted" in render_html(view)
    state.status = Status.FAILED
    assert view.status is Status.FAILED


def test_a_cache_hit_and_a_map_name_where_their_code_ran(tmp_path: Any) -> None:
    """A cache hit ran no code, so its executor row says so instead of naming an
    executor that never saw it; a map's row names the executor its elements ran on
    (the map node itself starts no attempt), or that every element was a hit."""
    from papercrane.backend.model import TaskConfig, TaskSpec
    from papercrane.widgets import render_text

    spec = TaskSpec(name="t", code="y = x + 1", inputs=("x",), outputs=("y",))
    config = TaskConfig(cache=True)  # (no executor named: the engine's default)
    home = tmp_path / "one"
    view, status = _run_view(home, spec, config, {"x": 1})
    assert status == "succeeded" and ("executor", "local") in view.summary()
    view, status = _run_view(home, spec, config, {"x": 1})
    assert status == "cached"
    assert "  executor: none (a cache hit runs nothing)" in render_text(view).splitlines()

    home = tmp_path / "map"
    view, _ = _map_view(home, "r = v * 2", [1, 2, 3], 1.0, cache=True)
    assert ("executor", "inline") in view.summary()
    view, _ = _map_view(home, "r = v * 2", [1, 2, 3], 1.0, cache=True)
    assert ("executor", "none (every element was a cache hit)") in view.summary()
    view, _ = _map_view(home, "r = v * 2", [1, 2, 4], 1.0, cache=True)  # one new element
    assert ("executor", "inline") in view.summary()
