# docs/examples/tutorial_monitor.py
"""A monitor: prints the workers' events, filtered by subject and sender."""

import queue
import sys

from tutorial_config import connect

import kiwipy


def follow(comm, subject="simulation.*.finished", sender="worker-*"):
    events = queue.Queue()

    def on_event(comm, body, sender, subject, correlation_id):
        events.put((sender, subject, body))

    comm.add_broadcast_subscriber(kiwipy.BroadcastFilter(on_event, subject=subject, sender=sender))
    return events


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    with connect() as comm:
        events = follow(comm)
        print("watching", flush=True)
        for _ in range(count):
            sender, subject, body = events.get(timeout=120)
            print(f"{sender}: {subject} {body}", flush=True)
