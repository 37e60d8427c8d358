#!/usr/bin/env bash
# The test suite on the other Python versions papercrane supports (requires-python >= 3.10).
#
#   scripts/test-pythons.sh [--quick|--unit] [VERSION ...]  (versions: 3.10 3.12 3.13 by default)
#
# Each version gets a virtualenv of its own (.ci-venv-VERSION) with what pip picks for that
# Python, which is not what the main run has: IPython 8 on 3.10, NumPy 2.5 on 3.13, pandas 2
# where pandas 3 is not built. Found there and nowhere else so far: classes carry
# `__firstlineno__` from 3.13 on (a rerun further down was a cache miss), and 3.13 warns
# about every SQLite connection left unclosed.
#
# Without an option: every test but the Kubernetes ones (the task image is built for the
# main run's Python). --quick: the unit tests and the tests in a real kernel; --unit: the
# unit tests alone. An interpreter that is not on this machine (pyenv's versions, or PATH)
# is reported and skipped: no package registry serves CPython itself.
set -uo pipefail
cd "$(dirname "$0")/.."

quick=0
versions=()
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        --unit) quick=2 ;;
        -h | --help) sed -n 2,15p "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "test-pythons.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
        *) versions+=("$arg") ;;
    esac
done
[ ${#versions[@]} -eq 0 ] && versions=(3.10 3.12 3.13)

find_python() {  # the newest patch release of $1 that runs
    local v=$1 candidate
    for candidate in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python"$v" 2>/dev/null \
        | sort -V -r) "$(command -v "python$v" 2>/dev/null)"; do
        if [ -n "$candidate" ] && "$candidate" -c 'import sys' >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

kernel_tests=(tests/integration -m "kernel and not kubernetes and not postgres")
failed=()
for v in "${versions[@]}"; do
    if ! py=$(find_python "$v"); then
        echo "== Python $v: not on this machine (PATH or pyenv); skipped" >&2
        continue
    fi
    echo "== Python $v ($py)" >&2
    venv=".ci-venv-$v"
    if ! { "$py" -m venv "$venv" \
        && "$venv/bin/python" -m pip install --quiet --upgrade pip "setuptools>=77" wheel \
        && "$venv/bin/python" -m pip install --quiet -e ".[test]"; }; then
        failed+=("$v (install)")
        continue
    fi
    # As if this venv were activated, not the caller's (IPython warns when VIRTUAL_ENV
    # names another venv; the tests start `papercrane` and `papermill` from PATH).
    in_venv=(env VIRTUAL_ENV="$PWD/$venv" PATH="$PWD/$venv/bin:$PATH" "$venv/bin/python" -m pytest -q)
    if [ "$quick" = 2 ]; then
        "${in_venv[@]}" tests/unit || failed+=("$v (unit)")
    elif [ "$quick" = 1 ]; then
        # The unit tests, then the kernel tests (a real kernel on this Python).
        "${in_venv[@]}" tests/unit || failed+=("$v (unit)")
        "${in_venv[@]}" "${kernel_tests[@]}" || failed+=("$v (kernel)")
    else
        "${in_venv[@]}" tests -m "not kubernetes" || failed+=("$v")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "== failed on Python: ${failed[*]}" >&2
    exit 1
fi
