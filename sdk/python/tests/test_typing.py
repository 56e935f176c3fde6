"""The package is typed (py.typed): mypy --strict finds nothing."""

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "agentauth"


def test_mypy_strict():
    out = subprocess.run([sys.executable, "-m", "mypy", "--strict", str(SRC)], capture_output=True, text=True,
                         cwd=SRC.parent.parent)
    assert out.returncode == 0, out.stdout + out.stderr
