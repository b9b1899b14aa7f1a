"""Failpoints: parsing TOPSLOT_FAILPOINT, the N-th hit, and a real SIGKILL in a child process."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from dispatch.crash_support import child_env

from topslot import failpoints

PROBE = """
import sys
from topslot import failpoints
print("noop" if failpoints.hit is failpoints._noop else "armed", flush=True)
for i in range(1, 4):
    failpoints.hit("elsewhere")
    failpoints.hit("after_reply")
    print(f"survived hit {i}", flush=True)
"""


def probe(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE], env=child_env(**env), capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("after_claim", ("after_claim", 1)),
        ("after_reply:3", ("after_reply", 3)),
    ],
)
def test_parse(value: str | None, parsed: tuple[str, int] | None) -> None:
    assert failpoints.parse(value) == parsed


@pytest.mark.parametrize("value", ["after_reply:0", ":2", "after_reply:x", "after_reply:-1"])
def test_parse_refuses_a_malformed_value(value: str) -> None:
    with pytest.raises(ValueError):
        failpoints.parse(value)


def test_only_the_nth_hit_of_its_own_name_fires() -> None:
    rounds: list[int] = []
    fired: list[int] = []
    hit = failpoints.armed("after_commit", 2, lambda: fired.append(len(rounds)))
    for n in range(1, 6):
        rounds.append(n)
        hit("after_reply")
        hit("after_commit")
    assert fired == [2]


def test_unset_is_the_noop_function() -> None:
    done = probe()
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["noop", "survived hit 1", "survived hit 2", "survived hit 3"]


def test_the_nth_hit_sigkills_the_process() -> None:
    done = probe(TOPSLOT_FAILPOINT="after_reply:2")
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.splitlines() == ["armed", "survived hit 1"]  # no cleanup, no later output
