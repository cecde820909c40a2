# docs/examples/worker_pool.py
"""A Worker runs 4 simulations at once; a plain task subscriber would run them one by one."""

import asyncio
import os
import threading

import kiwipy

url = os.environ.get("KIWIPY_URL", "memory://docs")
prefix = os.environ.get("KIWIPY_PREFIX", "kiwipy")
names = {"message_exchange": f"{prefix}.messages", "task_exchange": f"{prefix}.tasks"}
queue = f"{prefix}.simulations"
running = {"now": 0, "most": 0}
lock = threading.Lock()


def simulate(task):  # a plain function: runs on one of the worker's 4 threads
    incoming = kiwipy.sync.current_incoming_task()
    with lock:
        running["now"] += 1
        running["most"] = max(running["most"], running["now"])
    for _step in range(10):
        if incoming.lost:  # the broker took the task back (connection lost): stop early
            return None
        threading.Event().wait(0.02)  # a step of real work
    with lock:
        running["now"] -= 1
    return {"pk": task["pk"], "energy": -0.5 * task["atoms"]}


async def check(task):  # an async def function works too: it runs on the event loop
    await asyncio.sleep(0.01)
    return task["energy"] < 0


with kiwipy.connect(url, **names) as worker_comm, kiwipy.connect(url, **names) as client:
    pool = kiwipy.Worker(worker_comm, simulate, queue=queue, concurrency=4, name=f"{prefix}-pool")
    checker = kiwipy.Worker(worker_comm, check, queue=f"{queue}.checks", concurrency=2)
    with pool, checker:  # start both; drain both when the block ends
        tasks = [{"pk": pk, "atoms": 2 * pk} for pk in range(1, 9)]
        futures = client.task_queue(queue).task_send_many(tasks)
        results = [future.result(timeout=30) for future in futures]
        print("energies:", [result["energy"] for result in results])
        print("at most running at once:", running["most"])
        checked = client.task_queue(f"{queue}.checks").task_send(results[0])
        print("checked:", checked.result(timeout=10))
        status = client.rpc_send(f"{prefix}-pool", "status").result(timeout=10)
        print(f"status: done {status['done']}, running {status['running']}")
