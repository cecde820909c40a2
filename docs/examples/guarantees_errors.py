# docs/examples/guarantees_errors.py
"""Every future ends: with an answer, a remote error, or a typed kiwipy error."""

import concurrent.futures
import os

import kiwipy
import kiwipy.sync
from kiwipy.exceptions import DeadlineExceeded

url = os.environ.get("KIWIPY_URL", "memory://docs")
prefix = os.environ.get("KIWIPY_PREFIX", "kiwipy")
options = {
    "message_exchange": f"{prefix}.messages",
    "task_exchange": f"{prefix}.tasks",
    "task_queue": f"{prefix}.tasks",
    "dead_letter_queue": f"{prefix}.dead",  # where poison tasks go, with the reason
    "task_max_rejections": 2,  # default 10
    "task_rejection_pause": 0.05,  # default 0.2 s, doubling each round
}


def never_answers(comm, msg):
    return concurrent.futures.Future()  # "pending", then nothing


def fails(comm, task):
    raise ValueError(f"cannot relax {task}")


def refuses(comm, task):
    raise kiwipy.TaskRejected("not for me")


with kiwipy.sync.connect(url, **options) as comm:
    comm.add_rpc_subscriber(never_answers, "silent")
    try:
        comm.rpc_send("silent", "status?", deadline=0.5).result(timeout=5).result(timeout=5)
    except DeadlineExceeded:
        print("rpc: DeadlineExceeded after 0.5 s")

    try:
        comm.rpc_send("nobody-owns-this", "status?")
    except kiwipy.UnroutableError:
        print("rpc: UnroutableError at once")

    failing = comm.task_queue(f"{prefix}.failing")
    failing.add_task_subscriber(fails)
    try:
        failing.task_send({"pk": 7}).result(timeout=10)
    except kiwipy.RemoteException as exc:
        print("task:", exc.remote_type, exc.remote_message)

    refused = comm.task_queue(f"{prefix}.refused")
    refused.add_task_subscriber(refuses)
    try:
        refused.task_send({"pk": 8}).result(timeout=10)
    except kiwipy.RemoteException as exc:
        print("task:", exc.remote_type, "after", comm.settings.task_max_rejections, "rounds")
    with comm.task_queue(f"{prefix}.dead").next_task(timeout=5) as dead:
        print("dead-lettered:", dead.body)
        dead.process().set_result(None)  # acknowledge it: it leaves the dead-letter queue

    pending = comm.task_send({"pk": 9})  # no worker on this queue: the result cannot come yet

print("after close:", type(pending.exception(timeout=5)).__name__)
