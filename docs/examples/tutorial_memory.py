# docs/examples/tutorial_memory.py
"""The whole tutorial in one process, on the in-memory broker: threads play the processes."""

import threading

from tutorial_client import submit
from tutorial_config import connect
from tutorial_monitor import follow
from tutorial_worker import run_worker

url = "memory://tutorial"
stop = threading.Event()
with connect(url) as worker_comm, connect(url) as client_comm, connect(url) as monitor_comm:
    events = follow(monitor_comm)
    worker = threading.Thread(target=run_worker, args=(worker_comm, "worker-1", stop))
    worker.start()
    for result in submit(client_comm, 3):
        print(f"simulation {result['pk']}: energy {result['energy']}")
    print(client_comm.rpc_send("worker-1", "status").result(timeout=10))
    for _ in range(3):
        print("event from {}: {} {}".format(*events.get(timeout=10)))
    stop.set()
    worker.join()
