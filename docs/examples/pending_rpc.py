# docs/examples/pending_rpc.py
import concurrent.futures
import os
import threading

import kiwipy.sync

url = os.environ.get("KIWIPY_URL", "memory://docs")
prefix = os.environ.get("KIWIPY_PREFIX", "kiwipy")


def start_relaxation(comm, msg):
    """Answer at once with a future; the real answer follows when the work is done."""
    answer = concurrent.futures.Future()
    threading.Timer(0.5, answer.set_result, [{"energy": -1.5, "steps": msg["steps"]}]).start()
    return answer  # the sender first receives a "pending" reply


with kiwipy.sync.connect(url, message_exchange=f"{prefix}.messages") as comm:
    comm.add_rpc_subscriber(start_relaxation, "relaxer")
    future = comm.rpc_send("relaxer", {"steps": 10}, deadline=30)
    outcome = future.result(timeout=10)
    while isinstance(outcome, concurrent.futures.Future):  # pending: wait for the next reply
        print("pending")
        outcome = outcome.result(timeout=10)
    print("result:", outcome)
