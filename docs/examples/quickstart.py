# docs/examples/quickstart.py
import os
import queue

import kiwipy
import kiwipy.sync

url = os.environ.get("KIWIPY_URL", "memory://docs")  # or "amqp://guest:guest@127.0.0.1/"
prefix = os.environ.get("KIWIPY_PREFIX", "kiwipy")  # names: kiwipy.messages, kiwipy.tasks
names = {"message_exchange": f"{prefix}.messages", "task_exchange": f"{prefix}.tasks"}
events = queue.Queue()

with kiwipy.sync.connect(url, task_queue=f"{prefix}.tasks", **names) as comm:
    comm.add_task_subscriber(lambda comm, task: task * 2)  # a worker
    comm.add_rpc_subscriber(lambda comm, msg: f"pong {msg}", "process-42")
    on_event = lambda comm, body, sender, subject, correlation_id: events.put((subject, body))  # noqa: E731
    comm.add_broadcast_subscriber(kiwipy.BroadcastFilter(on_event, subject="state.*.done"))

    print("task result:", comm.task_send(21).result(timeout=10))  # 42
    print("rpc answer:", comm.rpc_send("process-42", "ping").result(timeout=10))  # pong ping
    comm.broadcast_send({"pk": 42}, sender=42, subject="state.running.done")
    comm.broadcast_send({"pk": 43}, sender=43, subject="state.running.failed")  # filtered out
    comm.broadcast_send({"pk": 44}, sender=44, subject="state.finished.done")
    print("event:", *events.get(timeout=10))
    print("event:", *events.get(timeout=10))
