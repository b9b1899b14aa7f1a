"""``topslot validate`` on hostile campaign files: refused quickly with flat memory, the rest still checked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from test_yaml_source import alias_bomb

REPO = Path(__file__).resolve().parents[2]
PEAK_RSS_LIMIT_KB = 300 * 1024  # the unbounded loader grew past 700 MB and kept going
PEAK_RSS_WRAPPER = (
    "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(done.returncode)"
)


def test_validate_refuses_an_alias_bomb_naming_the_alias_with_flat_memory(tmp_path: Path) -> None:
    shutil.copytree(REPO / "config", tmp_path / "config", ignore=shutil.ignore_patterns("*.db", "example"))
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    (tmp_path / "config" / "campaigns" / "bomb.yaml").write_text(alias_bomb())
    done = subprocess.run(  # through a parent that reports its child's peak RSS (kB) as its last line
        [sys.executable, "-c", PEAK_RSS_WRAPPER, sys.executable, "-m", "topslot", "validate", "config"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,  # a bound, not a benchmark: the old loader ran for minutes
        check=False,
    )
    out, *err, peak_kb = done.stdout.splitlines()
    assert done.returncode == 1, done.stdout + done.stderr
    assert [out] == [
        "config/campaigns/bomb.yaml:5:45: the alias *a3 makes the file stand for more than 100,000 values once "
        "aliases are expanded (an alias bomb?); refused without expanding it"
    ]
    assert "mothers-day-2027" not in out  # the good campaign has no problem
    assert err == [] and int(peak_kb) < PEAK_RSS_LIMIT_KB
