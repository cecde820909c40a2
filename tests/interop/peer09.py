"""A kiwipy 0.9 peer for the interop tests (tests/test_interop_kiwipy09.py).

Run it with the python of a virtual environment that has ``kiwipy[rmq]==0.9.0`` (never with the
project's own environment: it imports the *old* ``kiwipy``)::

    python peer09.py '{"url": "amqp://...", "role": "worker", "message_exchange": "...", ...}'

It plays one role and prints one JSON object per line on stdout (flushed), each with an
``"event"`` key. Values that JSON cannot hold are printed with ``repr``; every value event also
carries ``"repr"`` (``ascii()`` of the value as kiwipy 0.9 decoded it), so a test can see exactly
what arrived.

Config keys: ``url``, ``message_exchange``, ``task_exchange``, ``task_queue``, ``role``,
``lifetime`` (seconds; the peer exits on its own after it, whatever happens) and per role:

``worker``
    Subscribes to the task queue and answers each task (see ``answer``); prints ``task``.
``rpc-server``
    Subscribes to RPC ``identifier`` and answers each message; prints ``rpc``.
``listener``
    Subscribes to broadcasts; prints ``broadcast`` with ``sender_type``.
``send-tasks``
    Sends ``tasks`` (and ``no_reply_tasks`` with ``no_reply=True``), waits for the outcomes and
    prints ``result`` (with the nesting ``depth`` of pending replies) or ``error``.
``rpc-call``
    Sends each of ``messages`` to RPC ``recipient``; prints ``result`` or ``error``.
``broadcast``
    Sends each of ``broadcasts`` (dicts with body, sender, subject, correlation_id); prints
    ``sent``.
``declare-queue``
    Makes kiwipy 0.9 declare its default task queue (by adding and removing a task subscriber)
    and each queue of ``extra_queues`` (``task_queue(name)``); prints ``declared``.

Serving roles (worker, rpc-server, listener) print ``ready`` once subscribed and run until
stdin says ``stop`` or closes, or until ``lifetime`` has passed. Every role ends with ``exit``.

How a worker or RPC server answers a value (``answer``):

* ``{"raise": text}`` -> raises ``ValueError(text)``;
* ``{"echo": value}`` -> returns ``{"echo": value}`` unchanged;
* ``"pending:<x>"`` -> returns a ``concurrent.futures.Future`` resolved a moment later with
  ``"old:<x>"`` (the pending protocol);
* anything else -> ``f"old:{value}"``.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import sys
import threading
import time
import traceback
from typing import Any

import kiwipy  # kiwipy 0.9, from the peer's own virtual environment

PENDING_DELAY = 0.3
RESULT_TIMEOUT = 15.0
_print_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, **fields}, default=repr, sort_keys=True)
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def answer(value: Any) -> Any:
    if isinstance(value, dict) and "raise" in value:
        raise ValueError(value["raise"])
    if isinstance(value, dict) and "echo" in value:
        return {"echo": value["echo"]}
    if isinstance(value, str) and value.startswith("pending:"):
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        timer = threading.Timer(PENDING_DELAY, future.set_result, (f"old:{value[8:]}",))
        timer.daemon = True
        timer.start()
        return future
    return f"old:{value}"


def describe_outcome(future: Any) -> dict[str, Any]:
    """Wait through a chain of futures (one level per pending reply); describe the outcome."""
    depth = 0
    try:
        result = future.result(RESULT_TIMEOUT)
        while isinstance(result, concurrent.futures.Future):
            depth += 1
            result = result.result(RESULT_TIMEOUT)
    except Exception as exc:
        return {"outcome": "error", "type": type(exc).__name__, "message": str(exc)}
    return {"outcome": "result", "result": result, "repr": ascii(result), "depth": depth}


def report(kind: str, sent: Any, outcome: dict[str, Any]) -> None:
    event = outcome.pop("outcome")
    emit(event, kind=kind, sent=sent, **outcome)


def wait_for_stop(lifetime: float) -> None:
    stop = threading.Event()

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()

    threading.Thread(target=read_stdin, daemon=True).start()
    stop.wait(lifetime)


def serve_worker(comm: Any, config: dict[str, Any]) -> None:
    def on_task(_comm: Any, task: Any) -> Any:
        emit("task", task=task, repr=ascii(task), type=type(task).__name__)
        return answer(task)

    comm.add_task_subscriber(on_task)
    emit("ready")
    wait_for_stop(config["lifetime"])


def serve_rpc(comm: Any, config: dict[str, Any]) -> None:
    def on_rpc(_comm: Any, msg: Any) -> Any:
        emit("rpc", msg=msg, repr=ascii(msg), type=type(msg).__name__)
        return answer(msg)

    comm.add_rpc_subscriber(on_rpc, config["identifier"])
    emit("ready")
    wait_for_stop(config["lifetime"])


def listen(comm: Any, config: dict[str, Any]) -> None:
    def on_broadcast(_comm: Any, body: Any, sender: Any, subject: Any, correlation_id: Any) -> None:
        emit(
            "broadcast",
            body=body,
            repr=ascii(body),
            sender=sender,
            sender_type=type(sender).__name__,
            subject=subject,
            correlation_id=correlation_id,
        )

    comm.add_broadcast_subscriber(on_broadcast)
    emit("ready")
    wait_for_stop(config["lifetime"])


def send_tasks(comm: Any, config: dict[str, Any]) -> None:
    for task in config.get("no_reply_tasks", []):
        emit("sent-no-reply", task=task, future_is_none=comm.task_send(task, no_reply=True) is None)
    futures = []
    for task in config.get("tasks", []):
        try:
            futures.append((task, comm.task_send(task)))
        except Exception as exc:
            emit("error", kind="task", sent=task, type=type(exc).__name__, message=str(exc))
    for task, future in futures:
        report("task", task, describe_outcome(future))


def rpc_call(comm: Any, config: dict[str, Any]) -> None:
    for msg in config["messages"]:
        try:
            future = comm.rpc_send(config["recipient"], msg)
        except Exception as exc:  # kiwipy 0.9 raises UnroutableError from rpc_send itself
            emit("error", kind="rpc", sent=msg, type=type(exc).__name__, message=str(exc))
            continue
        report("rpc", msg, describe_outcome(future))


def send_broadcasts(comm: Any, config: dict[str, Any]) -> None:
    for item in config["broadcasts"]:
        ok = comm.broadcast_send(
            item.get("body"),
            sender=item.get("sender"),
            subject=item.get("subject"),
            correlation_id=item.get("correlation_id"),
        )
        emit("sent", ok=ok, body=item.get("body"))


def declare_queue(comm: Any, config: dict[str, Any]) -> None:
    identifier = comm.add_task_subscriber(lambda _comm, task: task)
    comm.remove_task_subscriber(identifier)
    for name in config.get("extra_queues", []):
        comm.task_queue(name)
    emit("declared", queues=[config["task_queue"], *config.get("extra_queues", [])])


ROLES = {
    "worker": serve_worker,
    "rpc-server": serve_rpc,
    "listener": listen,
    "send-tasks": send_tasks,
    "rpc-call": rpc_call,
    "broadcast": send_broadcasts,
    "declare-queue": declare_queue,
}


def main() -> int:
    if kiwipy.__version__ != "0.9.0":
        emit("failed", type="WrongKiwipy", message=f"kiwipy {kiwipy.__version__} imported")
        emit("exit", status=2)
        return 2
    config = json.loads(sys.argv[1])
    config.setdefault("lifetime", 30.0)
    role = ROLES[config["role"]]
    # Whatever happens (a hung close, a stuck broker), never outlive the lifetime by much.
    watchdog = threading.Timer(config["lifetime"] + 10.0, os._exit, (3,))
    watchdog.daemon = True
    watchdog.start()

    started = time.monotonic()
    comm = kiwipy.connect(
        config["url"],
        message_exchange=config["message_exchange"],
        task_exchange=config["task_exchange"],
        task_queue=config["task_queue"],
        testing_mode=False,
    )
    emit("connected", kiwipy_version=kiwipy.__version__, seconds=time.monotonic() - started)
    status = 0
    try:
        role(comm, config)
    except Exception as exc:
        status = 1
        emit("failed", type=type(exc).__name__, message=str(exc), trace=traceback.format_exc())
    finally:
        try:
            comm.close()
        except Exception as exc:
            emit("close-failed", type=type(exc).__name__, message=str(exc))
    emit("exit", status=status)
    return status


if __name__ == "__main__":
    sys.exit(main())
