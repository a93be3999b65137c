"""Code version recorded beside every output."""

import contextlib
import subprocess
from pathlib import Path

_BASE = "0.1.0"


def _describe() -> str:
    root = Path(__file__).resolve().parent.parent
    with contextlib.suppress(OSError, subprocess.SubprocessError):  # no git: plain version
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=root,
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return f"{_BASE}+g{out.stdout.strip()}"
    return _BASE


__version__ = _describe()
