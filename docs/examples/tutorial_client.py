# docs/examples/tutorial_client.py
"""A client: submits simulations and collects their results."""

import sys

from tutorial_config import QUEUE, connect


def submit(comm, count, seconds=0.2):
    tasks = [{"pk": pk, "atoms": 2 * pk, "seconds": seconds} for pk in range(1, count + 1)]
    futures = comm.task_queue(QUEUE).task_send_many(tasks)  # all on the broker's disk now
    print(f"submitted {len(futures)} simulations", flush=True)
    return [future.result(timeout=120) for future in futures]


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 0.2  # per simulation
    with connect() as comm:
        for result in submit(comm, count, seconds):
            print(f"simulation {result['pk']}: energy {result['energy']}")
