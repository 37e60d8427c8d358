"""Static analysis of a task cell: which names it reads from the notebook and which it
binds, in the order the cell would run.

This is pure ``ast`` work with no kernel involved, so every cell shape is unit-testable.
The rules are those of a notebook cell: a name read before the cell has surely bound
it comes from the notebook (an input); a name bound at top level is left in the
notebook (an output). "Surely" follows the cell's branches: after ``if flag: x = 1``,
a read of ``x`` may be the notebook's ``x`` (``flag`` false), so it is an input when the
notebook has one, as a plain cell would read it; the same after a ``try`` whose body
may fail before binding, or a ``match`` no case of which may match. Loops are taken to
run: a name bound in a loop's body is the cell's own after it. Otherwise
``for epoch in ...: loss = step()`` then ``print(loss)`` would read back the last run's
``loss``, so every run's interface would depend on the one before and miss the cache;
a loop that runs no time at all is rarer than that loop.
Reads inside functions and lambdas happen when they are called, so they are inputs only
when the cell itself never binds the name; a class body runs where it is defined, so its
own reads are immediate, while its methods' reads are deferred.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass, field

_DYNAMIC_CALLS = {"globals", "locals", "vars", "exec", "eval"}
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
#: Functions (by their last name: ``random.shuffle``, ``shuffle``, ``rng.shuffle``) of
#: the standard library and numpy that change their first argument in place, as a
#: method call changes its object: ``random.shuffle(items)`` makes ``items`` an output.
_IN_PLACE_CALLS = {
    "shuffle",  # random, numpy.random and a numpy Generator
    "heapify",
    "heappush",
    "heappop",
    "heappushpop",
    "heapreplace",
    "insort",
    "insort_left",
    "insort_right",
    "copyto",  # numpy
    "fill_diagonal",
    "putmask",
}
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass
class CellAnalysis:
    reads: list[str] = field(default_factory=list)
    deferred_reads: list[str] = field(default_factory=list)
    bound: list[str] = field(default_factory=list)
    ever_bound: set[str] = field(default_factory=set)
    mutated: list[str] = field(default_factory=list)
    deleted: set[str] = field(default_factory=set)
    import_bound: set[str] = field(default_factory=set)
    imported_modules: set[str] = field(default_factory=set)
    dynamic: list[tuple[int, str]] = field(default_factory=list)
    star_imports: list[int] = field(default_factory=list)
    ipython_calls: list[int] = field(default_factory=list)
    last_expr: bool = False
    #: Names bound only by ``with ... as name``: a resource (an open file, a pool, a
    #: connection), closed or useless once the block ends, not a result.
    context_bound: set[str] = field(default_factory=set)


def analyze(source: str) -> CellAnalysis:
    """Analyze Python source (already through IPython's input transformer)."""
    tree = ast.parse(source)
    flow = _ModuleFlow()
    for stmt in tree.body:
        flow.stmt(stmt)
    result = flow.result
    result.bound = [n for n in flow.order if n in flow.possible]
    result.context_bound = flow.with_targets - flow.plain_bound
    result.last_expr = (
        bool(tree.body) and isinstance(tree.body[-1], ast.Expr) and not _ends_with_semicolon(source)
    )
    for name in flow.deferred:
        if name in flow.top_bound or name in result.deferred_reads:
            continue
        # A name some function assigns through ``global`` is the cell's own, unless a
        # function also updates it in place (``global n; n += 1``): that needs n first.
        if name not in result.ever_bound or name in flow.global_reads:
            result.deferred_reads.append(name)
    return result


def _ends_with_semicolon(source: str) -> bool:
    """IPython's rule: a trailing ';' on the last expression hides its value."""
    last = None
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type not in (
                tokenize.COMMENT,
                tokenize.NL,
                tokenize.NEWLINE,
                tokenize.ENDMARKER,
                tokenize.INDENT,
                tokenize.DEDENT,
            ):
                last = tok
    except (tokenize.TokenError, SyntaxError):
        return False
    return last is not None and last.string == ";"


class _ModuleFlow:
    def __init__(self) -> None:
        self.result = CellAnalysis()
        self.possible: set[str] = set()  # bound on some path to the current point
        self.definite: set[str] = set()  # bound on every path to it (loops taken to run)
        self.order: list[str] = []
        self.deferred: list[str] = []
        self.top_bound: set[str] = set()  # bound by the cell's own statements
        self.global_reads: set[str] = set()  # ``global n; n += 1`` in a function
        self.binding_with = False
        self.with_targets: set[str] = set()  # bound by ``with ... as name``
        self.plain_bound: set[str] = set()  # bound any other way

    # -- bindings -------------------------------------------------------------------------
    def bind(self, name: str) -> None:
        self.possible.add(name)
        self.definite.add(name)
        self.top_bound.add(name)
        (self.with_targets if self.binding_with else self.plain_bound).add(name)
        self.result.ever_bound.add(name)
        if name not in self.order:
            self.order.append(name)

    def read(self, name: str) -> None:
        if name not in self.definite and name not in self.result.reads:
            self.result.reads.append(name)

    def unbind(self, name: str) -> None:
        self.possible.discard(name)
        self.definite.discard(name)
        self.result.deleted.add(name)

    def mutate(self, node: ast.expr) -> None:
        """``x[0] = 1``, ``x.a = 1``, ``x.append(1)``: x changes in place."""
        base = node
        while isinstance(base, (ast.Attribute, ast.Subscript)):
            base = base.value
        if isinstance(base, ast.Name) and base.id not in self.result.mutated:
            self.result.mutated.append(base.id)

    def defer(self, names: set[str]) -> None:
        for name in sorted(names):
            if name not in self.deferred:
                self.deferred.append(name)

    # -- statements -----------------------------------------------------------------------
    def block(self, body: list[ast.stmt]) -> None:
        for stmt in body:
            self.stmt(stmt)

    def branch(
        self, body: list[ast.stmt], start: tuple[set[str], set[str]]
    ) -> tuple[set[str], set[str]]:
        """Analyze one of several exclusive paths from ``start`` (what may be and what
        surely is bound there); return the same at its end. The caller joins the paths:
        a union of what may be bound, an intersection of what surely is."""
        self.possible, self.definite = set(start[0]), set(start[1])
        self.block(body)
        return self.possible, self.definite

    def state(self) -> tuple[set[str], set[str]]:
        return set(self.possible), set(self.definite)

    def join(self, ends: list[tuple[set[str], set[str]]]) -> None:
        self.possible = set().union(*(p for p, _ in ends))
        self.definite = set.intersection(*(d for _, d in ends))

    def stmt(self, node: ast.stmt) -> None:
        method = getattr(self, f"stmt_{type(node).__name__}", None)
        if method is not None:
            method(node)
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    self.expr(child)
                elif isinstance(child, ast.stmt):
                    self.stmt(child)

    def stmt_Expr(self, node: ast.Expr) -> None:  # noqa: N802
        self.expr(node.value)
        call = node.value
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute):
            self.mutate(call.func.value)

    def stmt_Assign(self, node: ast.Assign) -> None:  # noqa: N802
        self.expr(node.value)
        for target in node.targets:
            self.target(target)

    def stmt_AugAssign(self, node: ast.AugAssign) -> None:  # noqa: N802
        if isinstance(node.target, ast.Name):
            self.read(node.target.id)
            self.expr(node.value)
            self.bind(node.target.id)
        else:
            self.expr(node.target)
            self.expr(node.value)
            self.mutate(node.target)

    def stmt_AnnAssign(self, node: ast.AnnAssign) -> None:  # noqa: N802
        self.expr(node.annotation)
        if node.value is not None:
            self.expr(node.value)
            self.target(node.target)

    def stmt_For(self, node: ast.For | ast.AsyncFor) -> None:  # noqa: N802
        self.expr(node.iter)
        self.target(node.target)
        self.block(node.body)
        self.block(node.orelse)

    stmt_AsyncFor = stmt_For  # noqa: N815

    def stmt_While(self, node: ast.While) -> None:  # noqa: N802
        self.expr(node.test)
        self.block(node.body)
        self.block(node.orelse)

    def stmt_If(self, node: ast.If) -> None:  # noqa: N802
        self.expr(node.test)
        start = self.state()
        self.join([self.branch(node.body, start), self.branch(node.orelse, start)])

    def stmt_With(self, node: ast.With | ast.AsyncWith) -> None:  # noqa: N802
        for item in node.items:
            self.expr(item.context_expr)
            if item.optional_vars is not None:
                self.binding_with = True
                self.target(item.optional_vars)
                self.binding_with = False
        self.block(node.body)

    stmt_AsyncWith = stmt_With  # noqa: N815

    def stmt_Try(self, node: ast.Try) -> None:  # noqa: N802
        before = self.state()
        self.block(node.body)
        after_body = self.state()
        ends = []
        for handler in node.handlers:
            # The body may have failed anywhere: all it may have bound, none surely.
            self.possible, self.definite = set(after_body[0]), set(before[1])
            if handler.type is not None:
                self.expr(handler.type)
            if handler.name:
                self.bind(handler.name)
            self.block(handler.body)
            if handler.name:  # Python deletes the exception name after the handler
                self.possible.discard(handler.name)
                self.definite.discard(handler.name)
            ends.append(self.state())
        ends.append(self.branch(node.orelse, after_body))  # runs only when the body did
        self.join(ends)
        self.block(node.finalbody)

    stmt_TryStar = stmt_Try  # noqa: N815

    def stmt_Match(self, node: ast.Match) -> None:  # noqa: N802
        self.expr(node.subject)
        start = self.state()
        ends = [start]  # (no case may match)
        for case in node.cases:
            self.possible, self.definite = set(start[0]), set(start[1])
            for sub in ast.walk(case.pattern):
                if isinstance(sub, ast.MatchValue):
                    self.expr(sub.value)
                elif isinstance(sub, ast.MatchClass):
                    self.expr(sub.cls)
                elif isinstance(sub, ast.MatchMapping):
                    for key in sub.keys:
                        self.expr(key)
                name = getattr(sub, "name", None) or getattr(sub, "rest", None)
                if isinstance(name, str):
                    self.bind(name)
            if case.guard is not None:
                self.expr(case.guard)
            self.block(case.body)
            ends.append(self.state())
        self.join(ends)

    def stmt_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:  # noqa: N802
        for dec in node.decorator_list:
            self.expr(dec)
        self._arguments_at_def(node.args)
        if node.returns is not None:
            self.expr(node.returns)
        free, global_writes, global_reads = _scope(node)
        self.defer(free)
        self.global_reads |= global_reads
        for name in global_writes:
            self.result.ever_bound.add(name)
            self.possible.add(name)
            if name not in self.order:
                self.order.append(name)
        self.bind(node.name)

    stmt_AsyncFunctionDef = stmt_FunctionDef  # noqa: N815

    def stmt_ClassDef(self, node: ast.ClassDef) -> None:  # noqa: N802
        for dec in node.decorator_list:
            self.expr(dec)
        for base in node.bases:
            self.expr(base)
        for kw in node.keywords:
            self.expr(kw.value)
        free, _, global_reads = _scope(node)
        # The class body itself runs now: what it reads and does not bind is read now.
        stores, loads, declared, _, _ = _collect(list(node.body))
        immediate = loads - (stores - declared)
        for name in sorted(immediate):
            self.read(name)
        self.defer(free - immediate)
        self.global_reads |= global_reads
        self.bind(node.name)

    def stmt_Delete(self, node: ast.Delete) -> None:  # noqa: N802
        for target in node.targets:
            if isinstance(target, ast.Name):
                self.read(target.id)
                self.unbind(target.id)
            else:
                self.expr(target)
                self.mutate(target)

    def stmt_Import(self, node: ast.Import) -> None:  # noqa: N802
        for alias in node.names:
            top = alias.name.partition(".")[0]
            self.result.imported_modules.add(top)
            name = alias.asname or top
            self.result.import_bound.add(name)
            self.bind(name)

    def stmt_ImportFrom(self, node: ast.ImportFrom) -> None:  # noqa: N802
        if node.module and not node.level:
            self.result.imported_modules.add(node.module.partition(".")[0])
        for alias in node.names:
            if alias.name == "*":
                self.result.star_imports.append(node.lineno)
                continue
            name = alias.asname or alias.name
            self.result.import_bound.add(name)
            self.bind(name)

    def stmt_Global(self, node: ast.Global) -> None:  # noqa: N802
        return

    def _arguments_at_def(self, args: ast.arguments) -> None:
        for default in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
            self.expr(default)
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None and arg.annotation is not None:
                self.expr(arg.annotation)

    # -- targets and expressions ----------------------------------------------------------
    def target(self, node: ast.expr) -> None:
        if isinstance(node, ast.Name):
            self.bind(node.id)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for elt in node.elts:
                self.target(elt)
        elif isinstance(node, ast.Starred):
            self.target(node.value)
        else:  # attribute or subscript: reads the base and changes it in place
            self.expr(node)
            self.mutate(node)

    def expr(self, node: ast.AST, local: frozenset[str] = frozenset()) -> None:
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load) and node.id not in local:
                self.read(node.id)
            return
        if isinstance(node, ast.NamedExpr):
            self.expr(node.value, local)
            self.bind(node.target.id)  # walrus binds in the enclosing (module) scope
            return
        if isinstance(node, ast.Lambda):
            self._arguments_at_def(node.args)
            free, _, _ = _scope(node)
            self.defer(free - local)
            return
        if isinstance(node, _COMPREHENSIONS):
            self._comprehension(node, local)
            return
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else None
            if name in _DYNAMIC_CALLS and not (name == "vars" and node.args):
                self.result.dynamic.append((node.lineno, f"{name}()"))
            if name == "get_ipython":
                self.result.ipython_calls.append(node.lineno)
            called = name or (func.attr if isinstance(func, ast.Attribute) else None)
            if called in _IN_PLACE_CALLS and node.args:
                first = node.args[0]
                if not (isinstance(first, ast.Name) and first.id in local):
                    self.mutate(first)
        for child in ast.iter_child_nodes(node):
            self.expr(child, local)

    def _comprehension(self, node: ast.AST, local: frozenset[str]) -> None:
        generators = node.generators  # type: ignore[attr-defined]
        inner = set(local)
        for i, gen in enumerate(generators):
            self.expr(gen.iter, frozenset(inner) if i else local)
            inner |= _target_names(gen.target)
            for cond in gen.ifs:
                self.expr(cond, frozenset(inner))
        frozen = frozenset(inner)
        if isinstance(node, ast.DictComp):
            self.expr(node.key, frozen)
            self.expr(node.value, frozen)
        else:
            self.expr(node.elt, frozen)  # type: ignore[attr-defined]


def _target_names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _arg_names(args: ast.arguments) -> set[str]:
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    return {a.arg for a in every if a is not None}


def _scope(node: ast.AST) -> tuple[set[str], set[str], set[str]]:
    """(free names that resolve to module globals, names assigned via ``global``, names
    updated in place via ``global``, which must exist before)."""
    if isinstance(node, ast.Lambda):
        params, body = _arg_names(node.args), [node.body]
    elif isinstance(node, _FUNCTIONS):
        params, body = _arg_names(node.args), list(node.body)
    elif isinstance(node, ast.ClassDef):
        params, body = set(), list(node.body)
    else:  # comprehension inside a function or class
        params = set().union(*(_target_names(g.target) for g in node.generators))
        body = [g.iter for g in node.generators]
        body += [c for g in node.generators for c in g.ifs]
        body += [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
    stores, loads, declared, nested, updated = _collect(body)
    local = (params | stores) - declared
    free = {n for n in loads if n not in local}
    global_writes = declared & stores
    global_reads = declared & updated
    free |= global_reads
    for child in nested:
        child_free, child_writes, child_reads = _scope(child)
        free |= child_free if isinstance(node, ast.ClassDef) else child_free - local
        global_writes |= child_writes
        global_reads |= child_reads
    return free, global_writes, global_reads


def _collect(
    nodes: list[ast.AST],
) -> tuple[set[str], set[str], set[str], list[ast.AST], set[str]]:
    """(stores, loads, ``global`` names, nested scopes, names updated by ``n += ...``)
    of one scope's own code, not descending into nested scopes."""
    stores: set[str] = set()
    loads: set[str] = set()
    declared: set[str] = set()
    nested: list[ast.AST] = []
    updated: set[str] = set()
    stack = list(nodes)
    while stack:
        n = stack.pop()
        if isinstance(n, (*_FUNCTIONS, ast.ClassDef)):
            stores.add(n.name)
            nested.append(n)
            stack.extend(n.decorator_list)
            if isinstance(n, ast.ClassDef):
                stack.extend(n.bases)
                stack.extend(k.value for k in n.keywords)
            else:
                stack.extend(_evaluated_at_def(n.args))
                if n.returns is not None:
                    stack.append(n.returns)
            continue
        if isinstance(n, (ast.Lambda, *_COMPREHENSIONS)):
            nested.append(n)
            if isinstance(n, ast.Lambda):
                stack.extend(_evaluated_at_def(n.args))
            continue
        if isinstance(n, ast.Global):
            declared.update(n.names)
            continue
        if isinstance(n, ast.Nonlocal):
            stores.update(n.names)
            continue
        if isinstance(n, ast.Name):
            (loads if isinstance(n.ctx, ast.Load) else stores).add(n.id)
        elif isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name):
            updated.add(n.target.id)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            for alias in n.names:
                if alias.name != "*":
                    stores.add(alias.asname or alias.name.partition(".")[0])
        elif isinstance(n, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and n.name:
            stores.add(n.name)
        elif isinstance(n, ast.MatchMapping) and n.rest:
            stores.add(n.rest)
        stack.extend(ast.iter_child_nodes(n))
    return stores, loads, declared, nested, updated


def _evaluated_at_def(args: ast.arguments) -> list[ast.expr]:
    """Defaults and annotations: evaluated where the function is defined."""
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    return [
        *args.defaults,
        *(d for d in args.kw_defaults if d is not None),
        *(a.annotation for a in every if a is not None and a.annotation is not None),
    ]
