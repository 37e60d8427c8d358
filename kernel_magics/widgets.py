"""The widget a task run shows in its cell, updated live from the run's events.

The view is an ``ipywidgets.HTML`` (live in JupyterLab) displayed together with static
``text/html`` and ``text/plain`` renderings of the final state, so a notebook executed
by papermill or viewed on GitHub still shows what happened. The bundle is published
raw: running IPython's formatters over it cost more than building it.
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from papercrane.backend.model import ArtifactRef, Event, ExecutionState, Status
from papercrane.backend.units import format_duration, format_size

_COLORS = {
    Status.QUEUED: "#6b7280",
    Status.RUNNING: "#2563eb",
    Status.SUCCEEDED: "#15803d",
    Status.CACHED: "#7c3aed",
    Status.FAILED: "#b91c1c",
    Status.ABORTED: "#b45309",
}


@dataclass
class RunView:
    name: str
    version: str
    executor: str
    max_attempts: int
    state: ExecutionState | None = None
    outputs: dict[str, ArtifactRef] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    ended: float | None = None
    #: Why the run ended before its execution existed (an upload or the submission
    #: refused, an interrupt): the widget shows that, not "queued" for ever.
    refused: str = ""
    refused_status: Status = Status.FAILED
    #: A passing condition while the run goes on (the server unreachable, retried):
    #: shown until it clears, so a person knows why nothing moves.
    notice: str = ""

    @property
    def node(self):  # type: ignore[no-untyped-def]
        if self.state is None or not self.state.nodes:
            return None
        return next(iter(self.state.nodes.values()))

    @property
    def status(self) -> Status:
        if self.state is not None and (self.state.status.terminal or not self.refused):
            return self.state.status
        # (``refuse`` of a run whose execution had not ended: an interrupt)
        return self.refused_status if self.refused else Status.QUEUED

    def summary(self) -> list[tuple[str, str]]:
        node = self.node
        mapped = self.state is not None and bool(self.state.config.get("map"))
        rows = [("task", f"{self.name} @ {self.version[:12]}"), ("executor", self._executor())]
        if self.state is not None:
            rows.append(("execution", self.state.id))
        if node is not None:
            if node.attempt:
                rows.append(("attempt", _attempt_text(node, self.max_attempts)))
            rows.append(("cache", _cache_text(node, mapped)))
            if mapped and node.elements_failed and node.status.ok:
                rows.append(("elements", _failed_elements_text(self.state, node)))
            if node.where and not node.status.terminal:
                rows.append(("state", node.where))  # e.g. a pod pending on the scheduler
        if self.notice and self.ended is None:
            rows.append(("server", self.notice))
        elapsed = (self.ended or time.time()) - self.started
        rows.append(("duration", format_duration(elapsed)))
        return rows

    def _executor(self) -> str:
        """The executor that ran it, once an attempt started: a task naming none runs on
        the engine's default (a server's ``--executor``), which only its events tell. A
        map's attempts are its elements'; a cache hit ran nowhere, and says so rather
        than naming an executor that never saw it."""
        node, state = self.node, self.state
        if node is None or state is None:
            return self.executor
        if node.executor:
            return node.executor
        if state.config.get("map"):
            prefix = node.node + "["
            for key, element in state.nodes.items():  # (the first element has it, as a rule)
                if element.executor and key.startswith(prefix):
                    return element.executor
            if node.status.terminal and node.elements and node.elements_cached == node.elements:
                return "none (every element was a cache hit)"
        elif node.status is Status.CACHED:
            return "none (a cache hit runs nothing)"
        return self.executor


def _attempt_text(node: Any, max_attempts: int) -> str:
    """ "2 of 3": the attempt among those ``--retries`` allows. Retries after system
    errors (a lost process) are on a budget of their own: counted apart, so the attempt
    never reads as past its maximum ("3 of 1")."""
    system = node.system_failures
    ended_failing = node.user_failures + system == node.attempt  # (one failure per attempt)
    if system and ended_failing and node.error is not None and node.error.kind.value == "system":
        system -= 1  # this attempt's own failure: no retry of it started (yet)
    text = f"{node.attempt - system} of {max_attempts}"
    if system:
        text += f" (+{system} retried after system errors)"
    error = node.error
    if error is not None and not error.retryable and node.attempt - system < max_attempts:
        text += " (not retried: another attempt would fail the same way)"
    return text


def _failed_elements_text(state: ExecutionState, node: Any) -> str:
    """Which elements of a map that succeeded overall failed, and why (the first): their
    outputs are None in the lists, which the widget must not pass off as a clean run."""
    prefix = node.node + "["
    failed = sorted(
        (int(key[len(prefix) : -1]), element)
        for key, element in state.nodes.items()
        if key.startswith(prefix) and element.status is Status.FAILED
    )
    total = node.elements
    text = f"{total - node.elements_failed} of {total} elements succeeded; "
    if not failed:
        return text + f"{node.elements_failed} failed (their outputs are None)"
    first, element = failed[0]
    why = f"{element.error.type}: {element.error.message}" if element.error else "no reason given"
    if len(failed) == 1:
        return text + f"element {first} failed: {why} (its outputs are None)"
    shown = ", ".join(str(i) for i, _ in failed[:10]) + (", …" if len(failed) > 10 else "")
    return text + f"elements {shown} failed (their outputs are None); element {first}: {why}"


def _cache_text(node: Any, mapped: bool = False) -> str:
    if mapped and node.cache != "off":  # a map node: one cache entry per element
        return f"{node.elements_cached} of {node.elements} elements cached"
    if node.cache == "hit":
        src = node.cache_source
        age = format_duration(max(0.0, time.time() - src.get("created_at", time.time())))
        return f"hit {node.cache_key[:12]} from execution {src.get('execution_id', '?')}, {age} old"
    if node.cache == "miss":
        return f"miss {node.cache_key[:12]}"
    if node.cache == "invalid":
        return f"miss {node.cache_key[:12]} (stored entry was damaged and replaced)"
    return "off (use --cache)"


_ROW = (
    "<tr><td style='color:#6b7280;padding:1px 8px 1px 0'>{}</td>"
    "<td style='padding:1px 0'>{}</td></tr>"
)
_CELL = "<td style='padding:1px 10px 1px 0'>{}</td>"
#: The outputs table's header row, spaced as its cells (a header without the padding ran
#: its words together in JupyterLab: "outputtype").
_OUTPUTS_HEAD = (
    "<tr style='color:#6b7280'>"
    + "".join(_CELL.format(h) for h in ("output", "type", "size", "preview"))
    + "</tr>"
)
_ROW_START, _ROW_END = _ROW.split("{}</td></tr>")[0].split("{}"), "</td></tr>"
_row_starts: dict[str, str] = {}


def _row_start(key: str) -> str:
    """``_ROW`` up to its value for a summary key: the keys are a handful of fixed
    words, escaped once per process instead of on every render."""
    start = _row_starts.get(key)
    if start is None:
        start = _row_starts[key] = _ROW_START[0] + html.escape(key) + _ROW_START[1]
    return start


_escapes: dict[str, str] = {}


def _escaped(text: str) -> str:
    """``html.escape(text)``, remembered for short texts: a run renders the same names,
    versions, states and values over and over (~17 texts per run, two renders)."""
    found = _escapes.get(text)
    if found is None:
        found = html.escape(text)
        if len(text) <= 200:
            if len(_escapes) >= 4096:
                _escapes.clear()
            _escapes[text] = found
    return found


#: Renderings of runs with no event yet, by name and summary (see ``render``).
_unstarted: dict[tuple[Any, ...], tuple[str, str]] = {}


def render(view: RunView) -> tuple[str, str]:
    """The HTML and the text of the run's current state, from one summary: a widget
    shows both (the live view and its static fallbacks), and they then say the same
    (one duration).

    A run with no event yet (an inline task's widget, shown before its code runs) is
    queued, with no node, error or outputs: its rendering is a function of its name and
    summary (task and version, executor, duration), remembered for the next run of the
    same task."""
    summary = view.summary()
    outs = _output_rows(view)
    if view.state is not None or outs or view.refused or view.notice:
        return _html(view, summary, outs), _text(view, summary, outs)
    key = (view.name, *summary)
    found = _unstarted.get(key)
    if found is None:
        found = _html(view, summary, outs), _text(view, summary, outs)
        if len(_unstarted) >= 256:
            _unstarted.clear()
        _unstarted[key] = found
    return found


def render_html(view: RunView) -> str:
    return _html(view, view.summary(), _output_rows(view))


def render_text(view: RunView) -> str:
    return _text(view, view.summary(), _output_rows(view))


def _html(
    view: RunView, summary: list[tuple[str, str]], outs: list[tuple[str, str, str, str]]
) -> str:
    status = view.status
    color = _COLORS.get(status, "#6b7280")
    esc = _escaped
    rows = "".join([_row_start(k) + esc(v) + _ROW_END for k, v in summary])
    parts = [
        "<div class='papercrane-run' style='font-family:var(--jp-ui-font-family,sans-serif);"
        "font-size:12px;border-left:3px solid " + color + ";padding:4px 10px;margin:2px 0'>",
        f"<div><b>{esc(view.name)}</b> <span style='background:{color};color:white;"
        f"border-radius:8px;padding:0 7px;margin-left:6px'>{esc(status.value)}</span></div>",
        f"<table style='border-collapse:collapse;margin-top:3px'>{rows}</table>",
    ]
    if outs:
        cell = _CELL.format
        cells = "".join(["<tr>" + "".join([cell(esc(c)) for c in out]) + "</tr>" for out in outs])
        parts.append(
            "<table style='border-collapse:collapse;margin-top:4px'>"
            + _OUTPUTS_HEAD
            + cells
            + "</table>"
        )
    node = view.node
    if (
        node is not None
        and node.error is not None
        and status in (Status.FAILED, Status.RUNNING, Status.QUEUED)
    ):
        parts.append(
            f"<div style='color:#b91c1c;margin-top:3px'>{esc(node.error.type)}: "
            f"{esc(node.error.message)}</div>"
        )
    if view.refused:
        parts.append(f"<div style='color:{color};margin-top:3px'>{esc(view.refused)}</div>")
    parts.append("</div>")
    return "".join(parts)


def _output_rows(view: RunView) -> list[tuple[str, str, str, str]]:
    rows = [
        (name, ref.python_type, format_size(ref.size), ref.preview)
        for name, ref in view.outputs.items()
    ]
    rows += [(name, "import", "", ref) for name, ref in view.references.items()]
    return rows


def _text(
    view: RunView, summary: list[tuple[str, str]], outs: list[tuple[str, str, str, str]]
) -> str:
    lines = [f"{view.name}: {view.status.value}"]
    lines += [f"  {k}: {v}" for k, v in summary[1:]]
    for name, type_, size, prev in outs:
        what = f"{type_}, {size}" if size else type_  # (an import has no size)
        lines.append(f"  -> {name} ({what}) {prev}".rstrip())
    node = view.node
    if node is not None and node.error is not None and view.status is Status.FAILED:
        lines.append(f"  error: {node.error.type}: {node.error.message}")
    if view.refused:
        lines.append(f"  error: {view.refused}")
    return "\n".join(lines)


def _bundle(widget: Any, html_text: str, text: str) -> dict[str, Any]:
    """What the cell shows: the live widget plus static fallbacks (papermill, GitHub)."""
    data = {"text/plain": text, "text/html": html_text}
    if widget is not None:
        data["application/vnd.jupyter.widget-view+json"] = {
            "model_id": widget.model_id,
            "version_major": 2,
            "version_minor": 0,
        }
    return data


def new_id() -> str:
    """A random id in ``uuid.uuid4().hex``'s form (32 hex digits, version 4, RFC 4122
    variant), as ``comm`` makes for a comm: ``uuid.UUID``'s checks cost several times
    what the 16 random bytes do, in every task run's widget."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def _publish(data: dict[str, Any], display_id: str | None = None) -> str | None:
    """Show a raw bundle in the cell (``display_id`` None), or replace the display with
    that id; return the display's id, or None outside IPython (where ``display`` prints
    the bundle and there is nothing to update later).

    The message is the one ``IPython.display.display(data, raw=True, display_id=...,
    update=...)`` publishes, sent straight to the shell's display publisher, as
    ``display`` itself ends up doing: its argument handling and lookups cost a fast task
    run ~4 µs per message, more than publishing it."""
    from IPython.core.interactiveshell import InteractiveShell

    if not InteractiveShell.initialized():
        if display_id is None:
            from IPython.display import display

            display(data, raw=True, display_id=True)
        return None
    if display_id is None:
        display_id = os.urandom(16).hex()  # (IPython's display ids: 16 random bytes)
        extra = {}
    else:
        extra = {"update": True}
    InteractiveShell.instance().display_pub.publish(
        data=data, metadata={}, transient={"display_id": display_id}, **extra
    )
    return display_id


def shared_parts() -> dict[str, Any]:
    """A Layout and a style for a session's run widgets to share. An ``ipywidgets.HTML``
    otherwise creates both as widgets of their own (three comms per task run instead
    of one), which was most of the cost of showing a run."""
    import ipywidgets
    from ipywidgets.widgets.widget_string import HTMLStyle

    return {"layout": ipywidgets.Layout(), "style": HTMLStyle()}


def parts_usable(parts: dict[str, Any] | None) -> bool:
    """Shared parts survive until someone closes them (``Widget.close_all()``)."""
    return parts is not None and all(w.comm is not None for w in parts.values())


_html_class: Any = None


def _run_html_class() -> Any:
    """``ipywidgets.HTML`` that opens its comm from a kept copy of the state.

    Opening a widget serializes every synced trait (``get_state``) and first lists them
    (``keys``, walking the class's traits); that was most of the cost of showing a
    task run. A run widget is only ever created with ``value``, ``layout`` and
    ``style``, and the session's runs share one layout and one style, so every trait
    but ``value`` serializes to the same thing each time: the first widget's state is
    kept (per layout and style) and later ones send it with their own ``value``. The
    ``comm_open`` message is the same as ``ipywidgets.HTML`` sends. Defined on first
    use: ipywidgets is imported only when a run is shown."""
    global _html_class
    if _html_class is not None:
        return _html_class
    import comm as comm_module
    import ipywidgets
    import traitlets
    from ipywidgets.widgets.widget import __protocol_version__
    from ipywidgets.widgets.widget_string import HTMLStyle
    from traitlets import Bunch, HasTraits, default

    if not (ipywidgets.__version__.startswith("8.") and traitlets.__version__.startswith("5.")):
        # The shortcuts below lean on these versions' internals (``_trait_values``,
        # ``_call_widget_constructed``, what ``notify_change`` sends): with others, the
        # widget is a plain ``ipywidgets.HTML``, only slower to open and update.
        _html_class = ipywidgets.HTML
        return _html_class

    class RunHTML(ipywidgets.HTML):
        _sync_keys: list[str] | None = None
        _opened: tuple[tuple[str, str], dict[str, Any]] | None = None

        def __init__(self, **kwargs: Any) -> None:
            """``ipywidgets.HTML(value=..., layout=..., style=...)`` without traitlets'
            keyword handling, which validates each keyword twice (once more to
            cross-validate) and notifies its change: ~15 µs of a cache hit. When the
            three are of the traits' own types the validation could not change them,
            and nothing observes them before the comm opens (``Widget.notify_change``
            sends nothing without a comm; no ``@observe``/``@validate`` on them), so
            they are stored as the traits' values directly, as ``HasTraits.set``
            stores them. Anything else goes through ``ipywidgets.HTML``'s constructor."""
            value, layout, style = (kwargs.get(k) for k in ("value", "layout", "style"))
            if (
                len(kwargs) != 3
                or type(value) is not str
                or not isinstance(layout, ipywidgets.Layout)
                or not isinstance(style, HTMLStyle)
            ):
                super().__init__(**kwargs)
                return
            self._model_id = None
            HasTraits.__init__(self)
            self._trait_values.update(value=value, layout=layout, style=style)
            ipywidgets.Widget._call_widget_constructed(self)
            self.open()

        @default("keys")
        def _default_keys(self) -> list[str]:
            cls = type(self)
            if cls._sync_keys is None:  # synced traits are declared on the class
                cls._sync_keys = list(self.traits(sync=True))
            return list(cls._sync_keys)

        def open(self) -> None:
            if self.comm is not None:
                return
            cls = type(self)
            parts = (self.layout.model_id, self.style.model_id)
            if cls._opened is None or cls._opened[0] != parts:
                cls._opened = (parts, self.get_state())  # (no binary buffers in an HTML)
            state = {**cls._opened[1], "value": self.value}
            comm = comm_module.create_comm(  # (looked up now: kernels install theirs)
                target_name="jupyter.widget",
                data={"state": state, "buffer_paths": []},
                buffers=[],
                metadata={"version": __protocol_version__},
                comm_id=new_id(),
            )
            keys = cls._sync_keys
            if self._trait_values.get("comm") is not None or keys is None or "comm" in keys:
                self.comm = comm
                return
            # ``self.comm = comm``, as traitlets would store and announce it: ``comm`` is
            # an ``Any`` trait (no validation) and not synced, so ``Widget.notify_change``
            # would send nothing and the base class's notification (``_comm_changed``:
            # the message handler, the widget registry) is all that happens. ~5 µs less
            # per run, most of it ``Widget.notify_change`` building the ``keys`` list.
            self._trait_values["comm"] = comm
            HasTraits.notify_change(
                self, Bunch(name="comm", old=None, new=comm, owner=self, type="change")
            )

        def show_value(self, value: str) -> None:
            """``self.value = value``, sending the front end the same ``update`` message,
            without traitlets' change machinery (~5 µs of every task run): a ``str`` is
            what validating it for the ``Unicode`` trait gives back, and with nothing
            observing ``value`` and no ``hold_sync`` or front-end update in progress,
            ``Widget.notify_change`` would send exactly this. Otherwise it is the
            assignment itself."""
            traits = self._trait_values  # (a lock never read is still its empty default)
            if (
                type(value) is not str
                or traits.get("_property_lock")
                or self._holding_sync
                or set(self._trait_notifiers) - {"comm"}
            ):
                self.value = value
                return
            if value == traits.get("value"):
                return  # (an equal value: traitlets neither notifies nor sends)
            traits["value"] = value
            self._send({"method": "update", "state": {"value": value}, "buffer_paths": []}, [])

    _html_class = RunHTML
    return RunHTML


class RunWidget:
    """Listens to a run (``RunListener``) and keeps its cell output current.

    Rendering is the expensive part of a fast task, so it happens when the view can
    change what a person sees: once when shown, at most every 50 ms while the run
    goes on (a long task shows itself running, its attempts and retries), and once
    at the end (``finish``), which also replaces the static fallbacks.

    ``show()`` creates the live widget and displays it. A run that may end without
    running any code (one that checks the cache) is shown at its first event that is
    not the end, or its first log line, so before any output of its code; a cache hit
    has no such event and is shown by ``finish``, created once with its final state.
    """

    def __init__(
        self, view: RunView, *, live: bool = True, parts: dict[str, Any] | None = None
    ) -> None:
        self.view = view
        self.widget = None
        self._live = live
        self._parts = parts
        self._html = ""
        self._display_id: str | None = None
        self._last_render = 0.0
        #: The node's state line as last rendered (a pod's scheduling reason).
        self._where = ""
        self.shown = False

    def show(self) -> None:
        """Create the widget with the run's current state and display it (once)."""
        if self.shown:
            return
        self.shown = True
        self._html, text = render(self.view)
        self._last_render = time.monotonic()
        node = self.view.node
        self._where = node.where if node is not None else ""
        if self._live:
            if self._parts:
                self.widget = _run_html_class()(value=self._html, **self._parts)
            else:
                import ipywidgets

                self.widget = ipywidgets.HTML(value=self._html)
        self._display_id = _publish(_bundle(self.widget, self._html, text))

    def refresh(self, force: bool = False) -> None:
        if not self.shown:
            return  # ``show`` renders what there is then
        now = time.monotonic()
        if not force and now - self._last_render < 0.05:
            return
        self._last_render = now
        node = self.view.node
        self._where = node.where if node is not None else ""
        self._update(render_html(self.view))

    def _update(self, html_text: str) -> None:
        if html_text != self._html:
            self._html = html_text
            widget = self.widget
            if widget is None:
                return
            show_value = getattr(widget, "show_value", None)
            if show_value is not None:
                show_value(html_text)
            else:
                widget.value = html_text

    def finish(self) -> None:
        self.view.ended = time.time()
        if not self.shown:
            self.show()  # never shown (a cache hit): rendered once, as it ended
            return
        self._last_render = time.monotonic()
        html_text, text = render(self.view)
        self._update(html_text)
        if self._display_id is not None:
            _publish(_bundle(self.widget, self._html, text), self._display_id)

    def refuse(self, exc: BaseException) -> None:
        """End a run that failed before its execution existed (an upload or the
        submission refused, the server unreachable, an interrupt): the widget shows
        that and the reason, in the colours of a failed (or aborted) run."""
        from papercrane.backend.errors import ExecutionAborted, PapercraneError

        if isinstance(exc, (KeyboardInterrupt, ExecutionAborted)):
            self.view.refused_status = Status.ABORTED
            self.view.refused = str(exc) or "interrupted before the task started"
        elif isinstance(exc, PapercraneError):
            self.view.refused = str(exc)
        else:
            self.view.refused = f"{type(exc).__name__}: {exc}"
        self.view.notice = ""
        self.finish()

    # RunListener
    def on_connection(self, problem: str | None) -> None:
        """The server could not be reached and is being retried (``problem`` says so),
        or is reachable again (None): shown at once, cleared when it is back."""
        if (problem or "") == self.view.notice:
            return
        self.view.notice = problem or ""
        if not self.shown:
            self.show()
        else:
            self.refresh(force=True)

    def on_event(self, event: Event, state: ExecutionState) -> None:
        self.view.state = state
        if state.status.terminal:
            return  # the end is rendered once, by ``finish``
        if not self.shown:
            self.show()
        else:
            # A new state line is rendered even within 50 ms of the last render: it is
            # often the last change for minutes ("pending" then, at once, the pod's
            # scheduling reason, the only one that says why it waits).
            node = self.view.node
            where = node.where if node is not None else ""
            self.refresh(force=where != self._where)

    def on_events(self, events: Iterable[Event], state: ExecutionState) -> None:
        """A committed batch at once (``BatchListener``): the view shows the run's
        state, which is already past the whole batch, so one ``on_event`` leaves it as
        one per event would (an empty batch changes nothing); the events are not built."""
        first = next(iter(events), None)
        if first is not None:
            self.on_event(first, state)

    def on_log(self, stream: str, text: str) -> None:
        import sys

        self.show()  # (once) the widget goes above the task's output
        target = sys.stderr if stream == "stderr" else sys.stdout
        target.write(text)
        target.flush()


class _Note:
    def __init__(self, text: str, html_text: str) -> None:
        self.text, self.html_text = text, html_text

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return {"text/plain": self.text, "text/html": self.html_text}


def deferred_note(name: str, pending: int) -> _Note:
    """What a task cell shows in batch mode, where it is recorded instead of run."""
    text = (
        f"{name}: deferred ({pending} task{'s' if pending != 1 else ''} pending); it runs "
        "with the others when a later cell needs its outputs, at %workflow flush, or at the end"
    )
    return _Note(
        text,
        f"<div class='papercrane-run' style='font-size:12px;border-left:3px solid #6b7280;"
        f"padding:2px 10px;color:#374151'>{html.escape(text)}</div>",
    )
