"""The benchmark runs end to end: ``python bench/run.py --tiny`` against the broker.

Only the plumbing is checked (exit status, the final JSON line, every figure there with a
number for ours); no timing is asserted. ``--tiny`` never creates the kiwipy 0.9 environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent.parent / "bench" / "run.py"
FIGURES = (
    "tasks_reply_sync",
    "tasks_reply_sync_batch",
    "tasks_reply_async",
    "tasks_noreply_sync_batch",
    "rpc_pipelined_async",
    "rpc_p50_ms_sync",
    "broadcast_4subs_sync",
    "tasks_reply_async_8000_over_500",
    "rss_8000_over_500",
    "worker_rss_8000_over_500",
    "connect_first_reply_s",
    "cold_first_reply_s",
)
FIELDS = ("ours", "raw", "kiwipy09", "vs_raw", "vs_kiwipy09")


@pytest.mark.amqp
@pytest.mark.timeout(180)
def test_tiny_bench_runs_and_reports_every_figure(amqp_url: str) -> None:
    done = subprocess.run(
        [sys.executable, str(RUN), "--tiny", "--url", amqp_url],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    for name in FIGURES:
        assert name in figures, name
        assert set(FIELDS) <= set(figures[name]), (name, figures[name])
        ours = figures[name]["ours"]
        assert isinstance(ours, int | float) and not isinstance(ours, bool), (name, ours)


HOOKS_BENCH = RUN.parent / "hooks_bench.py"


@pytest.mark.timeout(120)
def test_tiny_hooks_bench_compiles_the_hooks_out_and_reports_every_variant() -> None:
    done = subprocess.run(
        [sys.executable, str(HOOKS_BENCH), "--tiny"],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["stripped_sites"] >= 10  # the baseline really runs without the hooks
    for pattern in ("tasks", "rpc"):
        for variant in ("baseline", "hooks", "metrics", "tracing", "extras"):
            assert figures[f"{pattern}_{variant}"]["cpu_rate"] > 0


SEND_FLOOR = RUN.parent / "send_floor.py"


@pytest.mark.amqp
@pytest.mark.timeout(120)
def test_send_floor_bench_measures_every_figure(amqp_url: str) -> None:
    done = subprocess.run(
        [sys.executable, str(SEND_FLOOR), "--rounds", "1", "--n", "20", "--url", amqp_url],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])["us"]
    expected = {
        "rabbitmq",
        "local",
        "local_no_poll",
        "kiwipy_to_bare",
        "raw_to_bare",
        "raw_to_local",
        "raw_to_bare_no_fsync",
    }
    assert set(figures) == expected
    for name, values in figures.items():
        assert len(values) == 1 and values[0] > 0, (name, values)
