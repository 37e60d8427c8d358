"""Static analysis of task cells: what a cell reads from the notebook and what it leaves.

Every test states the cell as a notebook user would write it (after IPython's input
transformer) and the exact names the analysis must find.
"""

from __future__ import annotations

import textwrap

import pytest

from papercrane.analysis import CellAnalysis, analyze


def cell(source: str) -> CellAnalysis:
    return analyze(textwrap.dedent(source))


# -- plain statements --------------------------------------------------------------------


def test_reads_come_in_order_and_bound_names_are_not_reads() -> None:
    a = cell(
        """
        y = x + 1
        z = y * w
        """
    )
    assert a.reads == ["x", "w"]
    assert a.bound == ["y", "z"]
    assert a.deferred_reads == []
    assert a.mutated == []
    assert a.last_expr is False


def test_builtins_are_reported_as_reads_for_capture_to_filter() -> None:
    a = cell("n = len(items)")
    assert a.reads == ["len", "items"]


def test_read_before_rebinding_is_an_input() -> None:
    a = cell(
        """
        data = data + [1]
        data = data + [2]
        """
    )
    assert a.reads == ["data"]
    assert a.bound == ["data"]


def test_augmented_assignment_reads_then_binds() -> None:
    a = cell("total += step")
    assert a.reads == ["total", "step"]
    assert a.bound == ["total"]


def test_augmented_assignment_after_binding_is_not_a_read() -> None:
    a = cell(
        """
        total = 0
        total += 1
        """
    )
    assert a.reads == []
    assert a.bound == ["total"]


def test_augmented_assignment_to_subscript_and_attribute_mutates() -> None:
    a = cell(
        """
        counts[key] += 1
        obj.size += extra
        """
    )
    assert a.reads == ["counts", "key", "obj", "extra"]
    assert a.mutated == ["counts", "obj"]
    assert a.bound == []


def test_tuple_starred_and_chained_targets_all_bind() -> None:
    a = cell(
        """
        first, *rest = seq
        [p, q] = pair
        u = v = source
        """
    )
    assert a.reads == ["seq", "pair", "source"]
    assert a.bound == ["first", "rest", "p", "q", "u", "v"]


def test_annotated_assignment_binds_only_with_a_value() -> None:
    a = cell(
        """
        x: int = five
        y: Annotation
        print(y)
        """
    )
    assert a.bound == ["x"]
    assert a.reads == ["int", "five", "Annotation", "print", "y"]


def test_attribute_and_subscript_assignment_mark_mutation_not_binding() -> None:
    a = cell(
        """
        obj.attr = 1
        arr[0] = 2
        nested["k"].field = 3
        """
    )
    assert a.reads == ["obj", "arr", "nested"]
    assert a.mutated == ["obj", "arr", "nested"]
    assert a.bound == []


def test_method_call_statement_marks_mutation() -> None:
    a = cell(
        """
        items.append(1)
        model.layers.freeze()
        """
    )
    assert a.mutated == ["items", "model"]
    assert a.reads == ["items", "model"]


def test_method_call_inside_an_assignment_is_not_mutation() -> None:
    a = cell("n = items.count(1)")
    assert a.mutated == []
    assert a.bound == ["n"]


def test_plain_function_call_statement_is_not_mutation() -> None:
    a = cell("print(x)")
    assert a.mutated == []


def test_standard_functions_that_change_their_first_argument_mark_it_mutated() -> None:
    """``random.shuffle(items)`` changes ``items`` as ``items.sort()`` does; so do
    heapq, bisect and a few numpy functions, however they were imported, also inside
    an assignment (``top = heapq.heappop(heap)``)."""
    a = cell(
        """
        import random, heapq
        from bisect import insort
        random.shuffle(deck)
        top = heapq.heappop(heap)
        insort(sorted_ids, 7)
        np.copyto(buf[:3], src)
        rng.shuffle(cfg.rows)
        shuffled = [random.shuffle(r) for r in rows]
        """
    )
    assert a.mutated == ["deck", "random", "heap", "sorted_ids", "buf", "np", "cfg", "rng"]
    assert "src" not in a.mutated and "r" not in a.mutated


def test_other_function_calls_leave_their_arguments_alone() -> None:
    a = cell("n = len(items)\nprint(items)\nrandom.choice(deck)")
    assert a.mutated == ["random"]


# -- del ------------------------------------------------------------------------------


def test_del_of_notebook_name_reads_and_deletes_it() -> None:
    a = cell("del old")
    assert a.reads == ["old"]
    assert a.deleted == {"old"}
    assert a.bound == []


def test_del_of_own_name_is_not_a_read_and_not_an_output() -> None:
    a = cell(
        """
        tmp = 1
        result = tmp * 2
        del tmp
        """
    )
    assert a.reads == []
    assert a.bound == ["result"]
    assert a.deleted == {"tmp"}


def test_read_after_del_is_a_read_again() -> None:
    a = cell(
        """
        tmp = 1
        del tmp
        y = tmp
        """
    )
    assert a.reads == ["tmp"]


def test_del_of_item_or_attribute_mutates() -> None:
    a = cell(
        """
        del table[0]
        del obj.attr
        """
    )
    assert a.mutated == ["table", "obj"]
    assert a.deleted == set()


# -- loops and conditions -----------------------------------------------------------------


def test_names_a_loop_may_bind_are_the_cells_own() -> None:
    a = cell(
        """
        for i in range(n):
            last = i
        print(last)
        """
    )
    assert a.reads == ["range", "n", "print"]
    assert a.bound == ["i", "last"]


def test_for_loop_body_reads_its_own_target_without_input() -> None:
    a = cell(
        """
        acc = []
        for row in rows:
            acc.append(row * scale)
        """
    )
    assert a.reads == ["rows", "scale"]
    assert a.bound == ["acc", "row"]


def test_for_else_bindings_are_the_cells_own() -> None:
    a = cell(
        """
        for i in its:
            pass
        else:
            z = 1
        print(i, z)
        """
    )
    assert a.reads == ["its", "print"]
    assert a.bound == ["i", "z"]


def test_while_body_bindings_are_the_cells_own() -> None:
    a = cell(
        """
        while cond():
            w = 1
        print(w)
        """
    )
    assert a.reads == ["cond", "print"]
    assert a.bound == ["w"]


def test_if_without_else_binding_may_leave_the_notebooks_value() -> None:
    """``if RETRAIN: model = train()`` then ``model.score(X)``: with RETRAIN false a
    plain cell scores the notebook's model, so the task needs it as an input."""
    a = cell(
        """
        if flag:
            y = 1
        print(y)
        """
    )
    assert a.reads == ["flag", "print", "y"]
    assert a.bound == ["y"]


def test_if_with_else_binding_in_both_branches_is_definite() -> None:
    a = cell(
        """
        if flag:
            y = 1
        else:
            y = 2
        print(y)
        """
    )
    assert a.reads == ["flag", "print"]


def test_elif_chain_binding_in_every_branch_is_definite() -> None:
    a = cell(
        """
        if a:
            v = 1
        elif b:
            v = 2
        else:
            v = 3
        out = v
        """
    )
    assert a.reads == ["a", "b"]
    assert a.bound == ["v", "out"]


def test_elif_chain_missing_a_branch_reads_the_notebooks_value() -> None:
    a = cell(
        """
        if a:
            v = 1
        elif b:
            v = 2
        out = v
        """
    )
    assert a.reads == ["a", "b", "v"]


def test_binding_before_if_survives_it() -> None:
    a = cell(
        """
        y = 0
        if flag:
            y = 1
        z = y
        """
    )
    assert a.reads == ["flag"]


# -- comprehensions ----------------------------------------------------------------------


def test_comprehension_variable_does_not_leak() -> None:
    a = cell(
        """
        ys = [x * k for x in xs]
        print(x)
        """
    )
    assert a.reads == ["xs", "k", "print", "x"]
    assert a.bound == ["ys"]


def test_comprehension_may_iterate_over_a_notebook_name_it_shadows() -> None:
    a = cell("x = [x + 1 for x in x]")
    assert a.reads == ["x"]
    assert a.bound == ["x"]


def test_nested_comprehension_inner_iterable_sees_outer_variable() -> None:
    a = cell("m = [[i * j for j in range(i)] for i in rows]")
    assert a.reads == ["rows", "range"]
    assert a.bound == ["m"]


def test_two_generators_and_conditions() -> None:
    a = cell("pairs = [(a, b) for a in left if a > lo for b in right if b != a]")
    assert a.reads == ["left", "lo", "right"]


def test_dict_set_and_generator_comprehensions() -> None:
    a = cell(
        """
        d = {k: v for k, v in items.items() if k not in skip}
        s = {w.lower() for w in words}
        total = sum(x * weight for x in values)
        """
    )
    assert a.reads == ["items", "skip", "words", "sum", "values", "weight"]
    assert a.bound == ["d", "s", "total"]


def test_walrus_binds_in_the_cell() -> None:
    a = cell(
        """
        if (n := len(data)) > 3:
            pass
        print(n)
        """
    )
    assert a.reads == ["len", "data", "print"]
    assert a.bound == ["n"]


def test_walrus_inside_comprehension_binds_in_the_cell() -> None:
    a = cell(
        """
        ys = [y for x in xs if (y := f(x))]
        last = y
        """
    )
    assert a.reads == ["xs", "f"]
    assert a.bound == ["y", "ys", "last"]
    assert "x" not in a.bound


def test_walrus_in_while_condition() -> None:
    a = cell(
        """
        while chunk := read():
            pass
        """
    )
    assert a.bound == ["chunk"]
    assert a.reads == ["read"]


# -- imports -----------------------------------------------------------------------------


def test_imports_bind_names_and_record_top_level_modules() -> None:
    a = cell(
        """
        import os.path
        import numpy as np
        from a.b import c as d
        from collections import OrderedDict
        x = os.getcwd()
        """
    )
    assert a.reads == []
    assert a.bound == ["os", "np", "d", "OrderedDict", "x"]
    assert a.import_bound == {"os", "np", "d", "OrderedDict"}
    assert a.imported_modules == {"os", "numpy", "a", "collections"}


def test_relative_import_binds_but_records_no_module() -> None:
    a = cell("from .sibling import thing")
    assert a.bound == ["thing"]
    assert a.imported_modules == set()


def test_import_inside_a_function_is_deferred_and_not_bound() -> None:
    a = cell(
        """
        def f():
            import json
            return json.dumps(payload)
        """
    )
    assert a.bound == ["f"]
    assert a.deferred_reads == ["payload"]
    assert a.import_bound == set()


def test_star_import_is_reported_with_its_line() -> None:
    a = cell("x = 1\nfrom os.path import *\n")
    assert a.star_imports == [2]
    assert a.imported_modules == {"os"}
    assert a.bound == ["x"]


# -- functions, lambdas, classes -------------------------------------------------------------


def test_function_body_reads_are_deferred_decorators_and_defaults_are_immediate() -> None:
    a = cell(
        """
        @decorate(option)
        def f(a=default_value, *, b: Hint = 2) -> Result:
            local = a + b
            return helper(local)

        y = f(1)
        """
    )
    assert a.reads == ["decorate", "option", "default_value", "Hint", "Result"]
    assert a.deferred_reads == ["helper"]
    assert a.bound == ["f", "y"]


def test_deferred_read_of_a_name_the_cell_binds_later_is_not_an_input() -> None:
    a = cell(
        """
        def f():
            return later + helper()

        def helper():
            return 1

        later = 2
        """
    )
    assert a.deferred_reads == []
    assert a.bound == ["f", "helper", "later"]


def test_parameters_locals_and_nested_scopes_are_not_reads() -> None:
    a = cell(
        """
        def outer(p):
            q = p + 1
            def inner(r):
                return q + r + free_inner
            return inner
        """
    )
    assert a.reads == []
    assert a.deferred_reads == ["free_inner"]


def test_nonlocal_is_local_to_the_enclosing_function() -> None:
    a = cell(
        """
        def outer():
            n = 0
            def inner():
                nonlocal n
                n += 1
                return n + g
            return inner
        """
    )
    assert a.deferred_reads == ["g"]


def test_comprehension_in_a_function_is_deferred() -> None:
    a = cell(
        """
        def f():
            return [x + offset for x in xs]
        """
    )
    assert a.deferred_reads == ["offset", "xs"]
    assert a.reads == []


def test_global_assignment_in_function_is_a_maybe_output() -> None:
    a = cell(
        """
        def setup():
            global config
            config = build(limit)
        """
    )
    assert a.bound == ["config", "setup"]
    assert a.deferred_reads == ["build", "limit"]
    assert "config" not in a.reads


def test_global_written_by_one_function_and_read_by_another_is_the_cells_own() -> None:
    a = cell(
        """
        def init():
            global model
            model = make()

        def predict(x):
            return model(x)

        init()
        y = predict(1)
        """
    )
    assert a.deferred_reads == ["make"]
    assert "model" in a.bound


def test_global_updated_in_place_needs_the_notebook_value() -> None:
    # `counter += 1` under `global counter` reads counter before it writes it.
    a = cell(
        """
        def bump():
            global counter
            counter += 1

        bump()
        """
    )
    assert a.deferred_reads == ["counter"]
    assert a.bound == ["counter", "bump"]


def test_global_updated_in_place_but_initialised_by_the_cell_is_not_an_input() -> None:
    a = cell(
        """
        counter = 0

        def bump():
            global counter
            counter += 1
        """
    )
    assert a.deferred_reads == []


def test_nested_function_annotations_and_lambda_kw_defaults_are_deferred_reads() -> None:
    a = cell(
        """
        def outer():
            def inner(x: InnerHint) -> InnerResult:
                return x
            return lambda *, k=kw_default: k
        """
    )
    assert a.deferred_reads == ["InnerHint", "InnerResult", "kw_default"]


def test_lambda_body_is_deferred_and_its_defaults_immediate() -> None:
    a = cell("g = lambda v, w=dflt: v + w + outer")
    assert a.reads == ["dflt"]
    assert a.deferred_reads == ["outer"]
    assert a.bound == ["g"]


def test_recursive_lambda_and_function_do_not_read_themselves() -> None:
    a = cell(
        """
        fact = lambda n: 1 if n < 2 else n * fact(n - 1)
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)
        """
    )
    assert a.reads == []
    assert a.deferred_reads == []


def test_class_bases_keywords_and_decorators_are_immediate_methods_deferred() -> None:
    a = cell(
        """
        @register
        class C(Base, metaclass=Meta):
            def method(self):
                return other + self.x
        obj = C()
        """
    )
    assert a.reads == ["register", "Base", "Meta"]
    assert a.deferred_reads == ["other"]
    assert a.bound == ["C", "obj"]


def test_class_body_runs_at_definition_so_its_reads_are_immediate() -> None:
    a = cell(
        """
        class Config:
            rate = base_rate
            doubled = rate * 2
        """
    )
    assert a.reads == ["base_rate"]
    assert a.deferred_reads == []


def test_class_body_read_of_a_name_bound_later_is_still_an_input() -> None:
    a = cell(
        """
        class C:
            attr = const
        const = 5
        """
    )
    assert a.reads == ["const"]


def test_methods_do_not_see_class_attributes() -> None:
    # Inside a method, `limit` is a module global even though the class defines one.
    a = cell(
        """
        class C:
            limit = 3
            def check(self, v):
                return v < limit
        """
    )
    assert a.reads == []
    assert a.deferred_reads == ["limit"]


def test_class_defined_inside_a_function_is_deferred() -> None:
    a = cell(
        """
        def make():
            class K(Base2):
                attr = cattr
            return K
        """
    )
    assert a.reads == []
    assert a.deferred_reads == ["Base2", "cattr"]


# -- try, with, match ---------------------------------------------------------------------


def test_exception_name_is_not_an_output() -> None:
    a = cell(
        """
        try:
            r = compute()
        except ValueError as err:
            print(err)
        """
    )
    assert a.bound == ["r"]
    assert "err" not in a.reads
    assert a.reads == ["compute", "ValueError", "print"]


def test_try_body_bindings_may_have_failed_before_binding() -> None:
    a = cell(
        """
        try:
            r = compute()
        except Exception:
            pass
        print(r)
        """
    )
    assert a.reads == ["compute", "Exception", "print", "r"]


def test_try_binding_in_the_body_and_every_handler_is_definite() -> None:
    a = cell(
        """
        try:
            import torch
            has_torch = True
        except ImportError:
            has_torch = False
        print(has_torch)
        """
    )
    assert a.reads == ["ImportError", "print"]


def test_try_else_sees_the_body_bindings() -> None:
    a = cell(
        """
        try:
            r = compute()
        except Exception:
            pass
        else:
            print(r)
        """
    )
    assert a.reads == ["compute", "Exception", "print"]


def test_finally_bindings_are_bound() -> None:
    a = cell(
        """
        try:
            a = 1
        finally:
            b = 2
        print(a, b)
        """
    )
    assert a.reads == ["print"]
    assert a.bound == ["a", "b"]


def test_with_as_binds_and_body_runs() -> None:
    a = cell(
        """
        with open(path) as fh:
            data = fh.read()
        size = len(data)
        """
    )
    assert a.reads == ["open", "path", "len"]
    assert a.bound == ["fh", "data", "size"]
    assert a.context_bound == {"fh"}


def test_with_target_also_bound_another_way_is_not_only_a_context() -> None:
    a = cell(
        """
        with pool() as p, lock:
            pass
        with timer() as t:
            pass
        t = t.elapsed
        """
    )
    assert a.context_bound == {"p"}
    assert a.bound == ["p", "t"]


def test_with_as_tuple_target() -> None:
    a = cell(
        """
        with pair() as (left, right):
            pass
        """
    )
    assert a.bound == ["left", "right"]
    assert a.context_bound == {"left", "right"}


def test_with_as_attribute_target_mutates() -> None:
    a = cell(
        """
        with ctx() as holder.res:
            pass
        """
    )
    assert a.mutated == ["holder"]
    assert a.context_bound == set()


def test_match_captures_bind_and_patterns_read() -> None:
    a = cell(
        """
        match command:
            case ["go", direction]:
                out = direction
            case {"key": value, **rest}:
                out = value
            case Point(x=px) if px > limit:
                out = px
            case consts.STOP:
                out = None
            case [1, *others]:
                out = others
            case _:
                out = default
        """
    )
    assert a.reads == ["command", "Point", "limit", "consts", "default"]
    assert set(a.bound) == {"direction", "out", "value", "rest", "px", "others"}


def test_match_mapping_keys_that_are_names_are_read() -> None:
    a = cell(
        """
        match d:
            case {Keys.A: v}:
                pass
        """
    )
    assert a.reads == ["d", "Keys"]


def test_match_case_bindings_may_not_happen() -> None:
    a = cell(
        """
        match v:
            case [x]:
                pass
        y = x
        """
    )
    assert a.reads == ["v", "x"]


# -- last expression, dynamic code, IPython ---------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x = 1\nx", True),
        ("x = 1\nx  # a comment", True),
        ("x = 1\nx;", False),
        ("x = 1\nx;  # hidden", False),
        ("x = 1\nx\n\n", True),
        ("x = 1", False),
        ("x = 1;", False),
        ("if a:\n    b", False),
        ("f(1); g(2)", True),
        ("f(1); g(2);", False),
        ("s = ';'\ns", True),
        ("", False),
        ("# only a comment", False),
    ],
)
def test_last_expression_and_trailing_semicolon(source: str, expected: bool) -> None:
    assert analyze(source).last_expr is expected


@pytest.mark.parametrize(
    "source",
    [
        "x;",
        "x",
        "(x);",
        "( x  # c; not this\n) ;",
        "( x  # c; not this\n)",
        "x \\\n;",
        "x \\\n  ;  # c",
        "x  # ;",
        "x  # ;\n# ;\n",
        "x;  # c\n\n# more\n",
        '"é; ü";',
        '"é; ü"',
        "f(\n 1);",
        "f(\n 1)\n",
        "s = ';'\ns ;",
        "if a:\n    b\nc;",
        "x;\r\n",
        "x\r\n",
        "x\f;",
        "[1,\n 2,  # ;\n];\n",
        "lambda: 1;",
        "a if b else c  # x;",
    ],
)
def test_trailing_semicolon_read_from_the_ast_agrees_with_ipython(source: str) -> None:
    """The same answer as IPython's own check (which tokenizes the cell)."""
    from IPython.core.displayhook import DisplayHook

    assert analyze(source).last_expr is not DisplayHook.semicolon_at_end_of_expression(source)


def test_dynamic_calls_are_reported_with_line_numbers() -> None:
    a = cell(
        """
        exec(code)
        v = eval("1")
        g = globals()
        loc = locals()
        names = vars()
        """
    )
    assert a.dynamic == [
        (2, "exec()"),
        (3, "eval()"),
        (4, "globals()"),
        (5, "locals()"),
        (6, "vars()"),
    ]


def test_vars_of_an_object_is_not_dynamic() -> None:
    a = cell("attrs = vars(obj)")
    assert a.dynamic == []
    assert a.reads == ["vars", "obj"]


def test_dynamic_call_inside_a_function_is_not_reported() -> None:
    # Only a call the cell makes is visible; this records the current behaviour.
    a = cell(
        """
        def f():
            return eval("1")
        """
    )
    assert a.dynamic == []


@pytest.mark.parametrize(
    "source",
    [
        "get_ipython().system('ls')",
        "files = get_ipython().getoutput('ls')",
        "get_ipython().run_line_magic('time', 'x = 1')",
    ],
)
def test_get_ipython_calls_are_reported(source: str) -> None:
    a = analyze("x = 0\n" + source)
    assert a.ipython_calls == [2]


def test_transformed_shell_command_is_an_ipython_call() -> None:
    from IPython.core.inputtransformer2 import TransformerManager

    transformed = TransformerManager().transform_cell("y = 1\n!ls\n")
    assert "get_ipython()" in transformed
    assert analyze(transformed).ipython_calls == [2]


def test_syntax_error_propagates() -> None:
    with pytest.raises(SyntaxError):
        analyze("x = (1,\n")


def test_async_statements_bind_like_their_sync_forms() -> None:
    a = cell(
        """
        r = await fetch(url)
        async for item in stream:
            pass
        async with session as s:
            pass
        """
    )
    assert a.reads == ["fetch", "url", "stream", "session"]
    assert a.bound == ["r", "item", "s"]


def test_exclusive_branches_do_not_see_each_others_bindings() -> None:
    a = cell(
        """
        if c:
            x = 1
        else:
            print(x)
        """
    )
    assert a.reads == ["c", "print", "x"]


def test_a_read_before_the_loop_binds_is_still_a_read() -> None:
    a = cell(
        """
        for v in vs:
            total = acc + v
            acc = total
        """
    )
    assert a.reads == ["vs", "acc"]
