# docs/examples/tutorial_worker.py
"""A worker: runs simulations, answers "status" by RPC, broadcasts what it does."""

import signal
import sys
import threading
import time

from tutorial_config import QUEUE, connect

import kiwipy.sync


def run_worker(comm, name, stop):
    state = {"worker": name, "done": 0, "running": None}
    lock = threading.Lock()  # subscribers run on callback threads

    def status(comm, msg):
        with lock:
            return dict(state)

    def simulate(comm, task):
        pk = task["pk"]
        if kiwipy.sync.current_incoming_task().redelivered:
            print(f"{name}: simulation {pk} again (its first worker died?)", flush=True)
        with lock:
            state["running"] = pk
        comm.broadcast_send({"pk": pk}, sender=name, subject=f"simulation.{pk}.started")
        time.sleep(task["seconds"])  # the real work
        energy = -0.5 * task["atoms"]
        with lock:
            state["running"] = None
            state["done"] += 1
        comm.broadcast_send(
            {"pk": pk, "energy": energy}, sender=name, subject=f"simulation.{pk}.finished"
        )
        return {"pk": pk, "energy": energy}

    comm.add_rpc_subscriber(status, name)  # one owner per name, broker wide
    comm.task_queue(QUEUE, prefetch_count=1).add_task_subscriber(simulate)
    print(f"{name} ready", flush=True)
    stop.wait()  # subscribers do the work on kiwipy's threads


if __name__ == "__main__":
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with connect() as comm:
        run_worker(comm, sys.argv[1] if len(sys.argv) > 1 else "worker-1", stop)
    print("worker stopped", flush=True)
