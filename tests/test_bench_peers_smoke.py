"""The peers benchmark (``bench/peers``): its figures, ratios and tables on fake numbers (always
run), and ``run_peers.py --tiny`` end to end when the peers' venvs exist (skipped otherwise).
No timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PEERS_DIR = Path(__file__).resolve().parent.parent / "bench" / "peers"
sys.path[:0] = [str(PEERS_DIR), str(PEERS_DIR.parent)]

import peers_report  # noqa: E402
import run_peers  # noqa: E402
import systems  # noqa: E402

SYSTEMS = ["raw", "kiwipy", "celery"]


def _fake_runs() -> list[tuple[str, str, dict[str, float] | None]]:
    """Three repetitions; celery's (b) fails once (``None``), its latency once is missing."""
    runs: list[tuple[str, str, dict[str, float] | None]] = []
    for rate_raw, rate_ours, rate_celery in ((1000, 1200, 400), (900, 1100, 500), (1100, 1300, 0)):
        runs += [("raw", "tasks_noreply", {"rate_per_s": rate_raw})]
        runs += [("kiwipy", "tasks_noreply", {"rate_per_s": rate_ours})]
        runs += [("celery", "tasks_noreply", {"rate_per_s": rate_celery})]
        runs += [("raw", "tasks_reply", {"rate_per_s": rate_raw / 2})]
        runs += [("kiwipy", "tasks_reply", {"rate_per_s": rate_ours / 2})]
        runs += [("celery", "tasks_reply", None if rate_celery == 0 else {"rate_per_s": 250.0})]
        for system, p50 in (("raw", 1.0), ("kiwipy", 1.2), ("celery", 2.0)):
            runs += [(system, "seq", {"p50_ms": p50, "p99_ms": 2 * p50})]
    return runs


@pytest.mark.timeout(10)
def test_medians_skip_failed_runs_and_ignore_other_workloads() -> None:
    table = peers_report.medians(_fake_runs())
    assert table["raw"]["tasks_noreply"] == 1000
    assert table["kiwipy"]["tasks_noreply"] == 1200
    assert table["celery"]["tasks_noreply"] == 400  # median of 400, 500, 0
    assert table["celery"]["tasks_reply"] == 250  # the failed run is left out
    assert table["raw"]["seq_p50_ms"] == 1.0
    assert table["raw"]["seq_rate"] is None  # no run had the metric


@pytest.mark.timeout(10)
def test_ratios_to_raw_and_to_ours() -> None:
    values = peers_report.values(peers_report.medians(_fake_runs()), SYSTEMS)
    assert values["tasks_noreply"]["kiwipy"] == {"value": 1200, "vs_raw": 1.2, "vs_ours": 1.0}
    assert values["tasks_noreply"]["celery"] == {"value": 400, "vs_raw": 0.4, "vs_ours": 0.333}
    assert values["seq_p50_ms"]["celery"]["vs_raw"] == 2.0
    assert values["seq_rate"]["celery"] == {"value": None, "vs_raw": None, "vs_ours": None}
    # Ours may be another system's name (another transport measured as ours).
    other = peers_report.values(peers_report.medians(_fake_runs()), SYSTEMS, ours="celery")
    assert other["tasks_noreply"]["kiwipy"]["vs_ours"] == 3.0
    assert json.loads(peers_report.json_line(values)) == values


@pytest.mark.timeout(10)
def test_ratio_edge_cases() -> None:
    assert peers_report.ratio(None, 1.0) is None
    assert peers_report.ratio(1.0, None) is None
    assert peers_report.ratio(1.0, 0.0) is None
    assert peers_report.ratio(1.0, 3.0) == 0.333


@pytest.mark.timeout(10)
def test_tables_have_a_row_per_system_and_a_column_per_figure() -> None:
    values = peers_report.values(peers_report.medians(_fake_runs()), SYSTEMS)
    notes = {"celery": "AMQP (rpc://)"}
    text = peers_report.text_table(values, SYSTEMS, notes).splitlines()
    assert len(text) == 2 + len(SYSTEMS)
    assert text[2].startswith("raw ") and "1,000 (=, 0.833)" in text[2]
    assert "1,200 (1.2, =)" in text[3]
    assert "400 (0.4, 0.333)" in text[4] and text[4].endswith("AMQP (rpc://)")
    markdown = peers_report.markdown_table(values, SYSTEMS, notes).splitlines()
    assert len(markdown) == 2 + len(SYSTEMS)
    columns = 2 + len(peers_report.FIGURES)
    assert all(line.count("|") == columns + 1 for line in markdown)
    assert "| - (-, -) |" in markdown[4]  # celery's missing seq_rate


@pytest.mark.timeout(10)
def test_systems_of_ours_are_named_by_url() -> None:
    assert systems.ours_name("amqp://guest:guest@127.0.0.1:5672/") == (
        "kiwipy",
        "amqp://guest:guest@127.0.0.1:5672/",
    )
    assert systems.ours_name("local:///tmp/x") == ("kiwipy-local", "local:///tmp/x")
    assert systems.ours_name("mine=local:///tmp/x") == ("mine", "local:///tmp/x")
    found, _missing = systems.systems("amqp://h/", [("kiwipy", "amqp://h/"), ("k2", "x://")], ())
    assert [(s.name, s.kind, s.url) for s in found] == [
        ("raw", "raw", "amqp://h/"),
        ("kiwipy", "ours", "amqp://h/"),
        ("k2", "ours", "x://"),
    ]


@pytest.mark.timeout(10)
def test_each_workload_maps_to_a_driver_pattern() -> None:
    mode = run_peers.MODES["tiny"]
    found, _ = systems.systems("amqp://h/", [("kiwipy", "amqp://h/")], ())
    labels = [run_peers.keys(s, w, mode).label for w in run_peers.WORKLOADS for s in found]
    assert labels == [
        "raw tasks_pipelined n=40 no-reply",
        "kiwipy tasks_async n=40 no-reply",
        "raw tasks_pipelined n=40",
        "kiwipy tasks_async n=40",
        "raw task_latency calls=20",
        "kiwipy task_latency calls=20",
    ]
    names = run_peers.PeerNames.fresh()
    assert names.task_queue + ".DQ" in names.queues()  # dramatiq's derived queues are deleted too


@pytest.mark.amqp
@pytest.mark.timeout(180)
def test_tiny_peers_run_reports_every_system(amqp_url: str, tmp_path: Path) -> None:
    missing = [peer for peer in systems.PEERS if systems.existing_python(peer) is None]
    if missing:
        pytest.skip(f"no venv for {', '.join(missing)}: run bench/peers/run_peers.py --setup")
    plot = tmp_path / "peers.png"
    command = [sys.executable, str(PEERS_DIR / "run_peers.py"), "--tiny", "--url", amqp_url]
    done = subprocess.run(
        [*command, "--plot", str(plot)],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    values = json.loads(done.stdout.strip().splitlines()[-1])
    for figure in peers_report.FIGURES:
        for system in ("raw", "kiwipy", *systems.PEERS):
            value = values[figure.name][system]["value"]
            assert isinstance(value, int | float) and value > 0, (figure.name, system, value)
    if systems.existing_python(systems.TOOLS) is not None:
        assert plot.stat().st_size > 0
