# docs/examples/long_tasks.py
"""A worker for tasks that run for hours: one at a time, and a consumer timeout to match."""

import os
import threading

import kiwipy.sync

url = os.environ.get("KIWIPY_URL", "memory://docs")
prefix = os.environ.get("KIWIPY_PREFIX", "kiwipy")
options = {"message_exchange": f"{prefix}.messages", "task_exchange": f"{prefix}.tasks"}


def relax(comm, task):
    incoming = kiwipy.sync.current_incoming_task()
    for _step in range(task["steps"]):
        if incoming.lost:  # the broker took the task back: another worker runs it now
            return None  # stop early; this result is not wanted
        threading.Event().wait(0.01)  # one step of real work
    return {"steps": task["steps"], "redelivered": incoming.redelivered}


with kiwipy.sync.connect(
    url,
    task_queue=f"{prefix}.tasks",
    task_prefetch_count=1,  # hold one long task, leave the rest to other workers
    consumer_timeout=6 * 3600,  # seconds; RabbitMQ >= 3.11.15 applies it to this worker
    heartbeat=30,  # the I/O thread answers heartbeats while relax() runs
    **options,
) as comm:
    comm.add_task_subscriber(relax)
    print(comm.task_send({"steps": 20}).result(timeout=30))
