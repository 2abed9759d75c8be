#!/usr/bin/env bash
# The whole test suite against a build of the extension with AddressSanitizer and
# UndefinedBehaviorSanitizer (CMake option FASTANCHOR_SANITIZE). Installs what it needs into a new
# virtual environment (or $SANITIZE_VENV), so it runs on a fresh machine with gcc or clang.
#
#   scripts/sanitize.sh                      # HYPOTHESIS_PROFILE=quick, all tests
#   scripts/sanitize.sh tests/test_fuzz.py   # pytest arguments select tests
#
# Python is not instrumented, so the ASan runtime is preloaded into the interpreter, and leak
# detection is off (CPython's own allocations at exit are not leaks of ours; tests/test_hardening.py
# checks our memory stays flat instead). Any report aborts the run (halt_on_error, and the module is
# built with -fno-sanitize-recover=all); the log is also searched for reports, belt and braces.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
CXX_BIN=${CXX:-c++}
VENV=${SANITIZE_VENV:-$(mktemp -d)/venv}
BUILD_DIR=${SANITIZE_BUILD_DIR:-$(mktemp -d)/build}
LOG=$(mktemp)

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
# RelWithDebInfo: -O2 -g and not stripped, so reports have file:line.
# --no-cache-dir: pip's wheel cache does not key on the -C settings, so a plain wheel of the same
# tree built before (README command 1 in CI) would be installed instead of the sanitized build.
python -m pip install --quiet --no-cache-dir ".[test]" -Cbuild-dir="$BUILD_DIR" -Ccmake.build-type=RelWithDebInfo \
    -Ccmake.define.FASTANCHOR_SANITIZE=ON

ASAN_RT=$("$CXX_BIN" -print-file-name=libasan.so)
if [ ! -e "$ASAN_RT" ]; then
    echo "sanitize.sh: the ASan runtime ($ASAN_RT) is missing: install your compiler's libasan" >&2
    exit 1
fi
# The module must really be instrumented, or the run would prove nothing.
SO=$(find "$VENV" -name '_core*.so' -path '*fastanchor*' | head -n 1)
# (ldd's whole output read before the search: with pipefail, grep -q quitting at its first match
# could fail the pipeline by a SIGPIPE to ldd.)
if [ -z "$SO" ] || ! grep -q libasan <<<"$(ldd "$SO")"; then
    echo "sanitize.sh: the installed module (${SO:-not found}) is not built with ASan" >&2
    exit 1
fi

# libstdc++ is preloaded too: Python does not link it, and ASan must find the real __cxa_throw when
# it starts, or the first C++ exception (ours, or matplotlib's) aborts with "CHECK failed".
STDCXX=$("$CXX_BIN" -print-file-name=libstdc++.so)
REPORTS=$(mktemp -d)
export LD_PRELOAD="$ASAN_RT:$STDCXX${LD_PRELOAD:+:$LD_PRELOAD}"
# Reports go to files (pytest captures stderr, and an aborted process never prints it).
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1:log_path=$REPORTS/asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$REPORTS/ubsan${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export PYTHONMALLOC=malloc  # every Python allocation through ASan's malloc: overruns into them are seen
export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-quick}

# Self-check: the sanitized module's _sanitizer_selfcheck(1) reads one element past the end of a
# heap array; ASan must report it, or the run below would prove nothing.
selfcheck=$(ASAN_OPTIONS=detect_leaks=0 python -c "
from fastanchor import _core
_core._sanitizer_selfcheck(1)" 2>&1 || true)
if ! grep -q "ERROR: AddressSanitizer: heap-buffer-overflow" <<<"$selfcheck"; then
    echo "sanitize.sh: the self-check's out-of-bounds read was not reported: is ASan active?" >&2
    echo "$selfcheck" | tail -n 20 >&2
    exit 1
fi

status=0
# Without arguments: the whole suite except the Ctrl-C tests. Those measure how promptly a signal
# sent from a timer thread stops a search; ASan's several-fold slowdown (and a busy machine) makes
# that timing meaningless here, while the normal test run holds them.
if [ "$#" -eq 0 ]; then
    set -- tests -k "not ctrl_c and not interrupted"
fi
# A hang fails the run too: after SANITIZE_TIMEOUT seconds SIGABRT makes faulthandler print every
# thread's stack.
timeout --signal=ABRT "${SANITIZE_TIMEOUT:-1800}" python -m pytest -p no:cacheprovider -q "$@" 2>&1 | tee "$LOG" \
    || status=$?
if [ -n "$(ls -A "$REPORTS")" ]; then
    echo "sanitize.sh: sanitizer reports:" >&2
    cat "$REPORTS"/* >&2
    status=1
fi
if grep -qE "ERROR: AddressSanitizer|runtime error:|SUMMARY: (Address|UndefinedBehavior)Sanitizer|Fatal Python error" "$LOG"; then
    echo "sanitize.sh: a sanitizer report or a crash in the output (see above)" >&2
    status=1
fi
rm -rf "$LOG" "$REPORTS"
if [ "$status" -eq 0 ]; then
    echo "sanitize.sh: clean (no AddressSanitizer or UndefinedBehaviorSanitizer report)"
fi
exit "$status"
