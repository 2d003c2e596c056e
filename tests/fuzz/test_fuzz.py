"""A short atheris session over every external-input parser (a longer one: see fuzz_parsers.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_short_fuzz_session_finds_no_crash(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(HERE / "fuzz_parsers.py"), "-runs=20000", "-seed=1", f"-artifact_prefix={tmp_path}/"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=HERE.parent.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done 20000 runs" in done.stderr
