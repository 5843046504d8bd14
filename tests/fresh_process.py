"""Run a test's script in a Python process of its own: for what lasts a process's life (a
gc freeze, malloc settings, which modules an import pulls in)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_fresh(script: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -c script`` from the repository root; returns the finished process."""
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def assert_prints_ok(script: str, timeout: float = 300) -> None:
    """The script runs to its end in a fresh process and prints ``ok`` (its asserts failing show their message)."""
    done = run_fresh(script, timeout)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
