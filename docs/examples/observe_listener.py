# docs/examples/observe_listener.py
import collections
import os

import kiwipy
import kiwipy.observe
import kiwipy.sync

url = os.environ.get("KIWIPY_URL", "memory://docs")  # or "amqp://guest:guest@127.0.0.1/"
prefix = os.environ.get("KIWIPY_PREFIX", "kiwipy")
names = {"message_exchange": f"{prefix}.messages", "task_exchange": f"{prefix}.tasks"}


class Outcomes(kiwipy.observe.Listener):
    """Counts how the tasks and RPCs handled here ended (called on the loop thread: be quick)."""

    def __init__(self):
        self.counts = collections.Counter()

    def finished(self, message):
        self.counts[f"{message.kind} finished"] += 1

    def failed(self, message, error):
        self.counts[f"{message.kind} failed: {type(error).__name__}"] += 1


def work(comm, task):
    if task < 0:
        raise ValueError(f"{task} is negative")
    return task


outcomes = Outcomes()
with kiwipy.sync.connect(url, task_queue=f"{prefix}.tasks", **names) as comm:
    comm.add_listener(outcomes)  # or kiwipy.observe.add_listener(outcomes) for every communicator
    comm.add_task_subscriber(work)
    for future in [comm.task_send(n) for n in (1, 2, -3)]:
        future.exception(timeout=10)  # wait for each outcome, result or error
print(sorted(outcomes.counts.items()))
