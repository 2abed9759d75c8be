"""The Ctrl-C tests pass in a process that was started with SIGINT ignored.

A non-interactive shell starts its background jobs with SIGINT set to SIG_IGN, and some CI agents
start their jobs the same way; Python then installs no handler of its own, so a test that sends
SIGINT must install one for its duration (``conftest.interrupt_latency``). This runs one of those
tests in such a process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_ctrl_c_test_passes_with_sigint_ignored_in_the_parent():
    test = f"{TESTS_DIR / 'test_evolve.py'}::test_ctrl_c_stops_the_search"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        preexec_fn=_ignore_sigint,
        env=env,
        cwd=TESTS_DIR.parent,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout
