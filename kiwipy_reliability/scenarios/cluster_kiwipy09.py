"""CL4: a kiwipy 0.9 peer and ours on one task queue of the cluster, by virtual host kind.

kiwipy 0.9.0 (from PyPI, in its own virtual environment: ``$KIWIPY09_VENV`` or
``<repo>/.venv-kiwipy09``, made with pip when missing) runs ``tests/interop/peer09.py``.

* **quorum-default vhost** (``rabbitmqctl add_vhost --default-queue-type quorum``): the 0.9
  worker declares the task queue with its own arguments, which makes it a quorum queue, and
  answers our tasks; then we serve it (with the default settings, then with
  ``task_queue_type="quorum"``) and a 0.9 peer sends. Target: every task answered both ways,
  the queue is ``quorum``. Our quorum declaration adds ``x-delivery-limit``, which the queue
  made by 0.9 lacks: one warning, then the queue is used as it is.
* **plain vhost**: the 0.9 worker declares a classic queue and answers our tasks; we serve it
  with ``task_queue_type="quorum"``: one warning (``already exists with other arguments``),
  no crash, every task answered. The other way round (ours declared the quorum queue first),
  the 0.9 peer fails with ``PRECONDITION_FAILED``, as docs/operations.md says
  (``kiwipy09_refused`` 1).

Figures: ``answered`` / ``sent`` over all steps, ``warnings_*`` per step, ``queue_is_quorum``
(the quorum-default vhost's queue), ``crashes`` (ours raising), ``kiwipy09_refused``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kiwipy.sync
from kiwipy_reliability.base import Scale, ScenarioResult, unique_name
from kiwipy_reliability.faults.cluster import RabbitCluster

__all__ = ["NAME", "kiwipy09_python", "misses", "run"]

NAME = "cluster_kiwipy09"

ROOT = Path(__file__).resolve().parents[2]
PEER_SCRIPT = ROOT / "tests" / "interop" / "peer09.py"
KIWIPY09_REQUIREMENT = "kiwipy[rmq]==0.9.0"
_TIMEOUT = 20.0
_PEER_LIFETIME = 60.0
_MISMATCH = "already exists with other arguments"


def kiwipy09_python() -> Path:
    """The python of a virtual environment with kiwipy 0.9.0 (made once with pip); raises
    ``OSError``/``subprocess.SubprocessError`` when it cannot be made (offline, no pip)."""
    venv = Path(os.environ.get("KIWIPY09_VENV") or ROOT / ".venv-kiwipy09")
    python = venv / "bin" / "python"
    stamp = venv / ".kiwipy09-stamp"
    wanted = f"{KIWIPY09_REQUIREMENT} python{sys.version_info[0]}.{sys.version_info[1]}"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if venv.exists() and any(venv.iterdir()) and not (venv / "pyvenv.cfg").exists():
        raise OSError(f"{venv} exists and is not a virtual environment; not overwriting it")
    run = {"check": True, "capture_output": True, "text": True}
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], timeout=120, **run)  # type: ignore[call-overload]  # noqa: S603
    install = [str(python), "-m", "pip", "install", "--quiet", "--no-input", KIWIPY09_REQUIREMENT]
    subprocess.run(install, timeout=300, **run)  # type: ignore[call-overload]  # noqa: S603
    stamp.write_text(wanted)
    return python


class _Peer:
    """A kiwipy 0.9 process playing one role of ``peer09.py``; JSON events on stdout."""

    def __init__(self, python: Path, url: str, names: dict[str, str], role: str, **config: Any):
        full = {"url": url, "role": role, "lifetime": _PEER_LIFETIME, **names, **config}
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._process = subprocess.Popen(  # noqa: S603 - our peer script, our config
            [str(python), "-I", str(PEER_SCRIPT), json.dumps(full)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=PEER_SCRIPT.parent,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, *kinds: str, timeout: float = _TIMEOUT) -> dict[str, Any] | None:
        """The next event of one of ``kinds`` (``None``: the peer ended or failed first)."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                return None
            event: dict[str, Any] = json.loads(line)
            self.events.append(event)
            if event["event"] in kinds:
                return event
            if event["event"] in ("failed", "exit"):
                return None
        return None

    def failure(self) -> str:
        failed = [e for e in self.events if e["event"] == "failed"]
        return f"{failed[0]['type']}: {failed[0]['message']}" if failed else ""

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self._process.stdin is not None
            self._process.stdin.write("stop\n")
            self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)
        self._reader.join(5)  # at EOF: done with stdout
        if self._process.stdout is not None:
            self._process.stdout.close()


class _Warnings(logging.Handler):
    """Counts kiwipy's "queue exists with other arguments" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if _MISMATCH in record.getMessage():
            self.count += 1


@contextlib.contextmanager
def _counting_warnings() -> Iterator[_Warnings]:
    handler = _Warnings()
    logger = logging.getLogger("kiwipy")
    level, propagate = logger.level, logger.propagate
    if logger.getEffectiveLevel() > logging.WARNING:  # a quiet run must still count them
        logger.setLevel(logging.WARNING)
        logger.propagate = False  # ... without printing them
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def run(cluster: RabbitCluster, scale: Scale) -> ScenarioResult:
    tasks = scale.pick(5, 20, 50)
    notes: list[str] = []
    figures: dict[str, float | int] = {"sent": 0, "answered": 0, "crashes": 0}
    began = time.monotonic()
    try:
        python = kiwipy09_python()
    except (OSError, subprocess.SubprocessError) as exc:
        notes.append(f"kiwipy 0.9 not available (no PyPI access?): {exc}")
        return ScenarioResult(NAME, {"kiwipy09_available": 0}, notes)
    figures["kiwipy09_available"] = 1
    dqt = unique_name("reliability-dqt")
    plain = unique_name("reliability-plain")
    cluster.add_vhost(dqt, default_queue_type="quorum")
    cluster.add_vhost(plain)
    node = cluster.nodes[0]
    try:
        quorum = {"task_queue_type": "quorum"}
        step = _Step(python, f"{node.url}{dqt}", figures, notes)
        # kiwipy 0.9 declares first on the quorum-default vhost: a quorum queue.
        step.old_worker_then_ours("dqt_old_serves", tasks, quorum)
        info = cluster.queue_info(step.names["task_queue"], dqt)
        figures["queue_is_quorum"] = int(info is not None and info["type"] == "quorum")
        step.ours_then_old_sender("dqt_ours_serve_default", tasks, {})
        step.ours_then_old_sender("dqt_ours_serve_quorum", tasks, quorum)
        # On a plain vhost kiwipy 0.9 makes a classic queue; ours asks for quorum.
        step = _Step(python, f"{node.url}{plain}", figures, notes)
        step.old_worker_then_ours("plain_old_serves", tasks, quorum)
        step.ours_then_old_sender("plain_ours_serve_quorum", tasks, quorum)
        step = _Step(python, f"{node.url}{plain}", figures, notes)
        step.ours_first_then_old_worker("plain_ours_first", quorum)
    finally:
        for vhost in (dqt, plain):
            with contextlib.suppress(Exception):
                cluster.delete_vhost(vhost)
    figures["total_s"] = round(time.monotonic() - began, 1)
    return ScenarioResult(NAME, figures, notes)


class _Step:
    """One queue on one vhost, shared by kiwipy 0.9 and us."""

    def __init__(
        self, python: Path, url: str, figures: dict[str, float | int], notes: list[str]
    ) -> None:
        prefix = unique_name("cl09")
        self.python = python
        self.url = url
        self.figures = figures
        self.notes = notes
        self.names = {
            "message_exchange": f"{prefix}.messages",
            "task_exchange": f"{prefix}.tasks",
            "task_queue": f"{prefix}.queue",
        }

    def _connect(self, options: dict[str, Any]) -> kiwipy.sync.Communicator:
        return kiwipy.sync.connect(self.url, testing_mode=False, **self.names, **options)

    def old_worker_then_ours(self, label: str, tasks: int, options: dict[str, Any]) -> None:
        """A kiwipy 0.9 worker (declaring the queue if it is new); we send ``tasks``."""
        peer = _Peer(self.python, self.url, self.names, "worker")
        try:
            if peer.wait_for("ready") is None:
                self.notes.append(f"{label}: kiwipy 0.9 worker failed: {peer.failure()}")
                return
            with _counting_warnings() as warned:
                try:
                    with self._connect(options) as comm:
                        futures = [comm.task_send(f"{label}-{i}") for i in range(tasks)]
                        self.figures["sent"] += tasks
                        answers = [f.result(_TIMEOUT) for f in futures if f is not None]
                except Exception as exc:
                    self.figures["crashes"] += 1
                    self.notes.append(f"{label}: ours raised {exc!r}")
                    return
            good = sum(a == f"old:{label}-{i}" for i, a in enumerate(answers))
            self.figures["answered"] += good
            self.figures[f"warnings_{label}"] = warned.count
        finally:
            peer.stop()

    def ours_then_old_sender(self, label: str, tasks: int, options: dict[str, Any]) -> None:
        """We serve the queue; a kiwipy 0.9 peer sends ``tasks``."""
        with _counting_warnings() as warned:
            try:
                with self._connect(options) as comm:
                    comm.add_task_subscriber(lambda _comm, task: f"new:{task}")
                    sent = [f"{label}-{i}" for i in range(tasks)]
                    peer = _Peer(self.python, self.url, self.names, "send-tasks", tasks=sent)
                    try:
                        results = [peer.wait_for("result", "error") for _ in sent]
                    finally:
                        peer.stop()
            except Exception as exc:
                self.figures["crashes"] += 1
                self.notes.append(f"{label}: ours raised {exc!r}")
                return
        self.figures["sent"] += tasks
        self.figures["answered"] += sum(
            r is not None and r.get("result") == f"new:{r.get('sent')}" for r in results
        )
        self.figures[f"warnings_{label}"] = warned.count

    def ours_first_then_old_worker(self, label: str, options: dict[str, Any]) -> None:
        """We declare the queue first; a kiwipy 0.9 worker then declares it its way."""
        try:
            with self._connect(options) as comm:
                comm.remove_task_subscriber(comm.add_task_subscriber(lambda _comm, task: task))
        except Exception as exc:
            self.figures["crashes"] += 1
            self.notes.append(f"{label}: ours raised {exc!r}")
            return
        peer = _Peer(self.python, self.url, self.names, "worker")
        try:
            ready = peer.wait_for("ready")
            refused = ready is None and "PRECONDITION_FAILED" in peer.failure()
            self.figures["kiwipy09_refused"] = int(refused)
            if ready is None:
                self.notes.append(f"{label}: kiwipy 0.9 worker: {peer.failure()[:200]}")
        finally:
            peer.stop()


def misses(figures: dict[str, float | int]) -> list[str]:
    """The targets ``figures`` miss (none when kiwipy 0.9 could not be installed)."""
    if not figures.get("kiwipy09_available"):
        return []
    found: list[str] = []
    if figures.get("crashes"):
        found.append(f"ours raised {figures['crashes']} times")
    if figures.get("answered") != figures.get("sent"):
        found.append(f"answered {figures.get('answered')} of {figures.get('sent')} tasks")
    if not figures.get("queue_is_quorum"):
        found.append("kiwipy 0.9's declaration on the quorum-default vhost made no quorum queue")
    if figures.get("warnings_plain_ours_serve_quorum") != 1:
        found.append("no single warning for our quorum declaration of a classic queue")
    if figures.get("warnings_dqt_ours_serve_default"):
        found.append("a warning with the default declaration on the quorum-default vhost")
    return found
