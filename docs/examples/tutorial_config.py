# docs/examples/tutorial_config.py
"""Where the tutorial's processes meet: the broker URL and the names on the broker."""

import os

import kiwipy.sync

URL = os.environ.get("KIWIPY_URL", "memory://docs")  # one process only: see the tutorial
PREFIX = os.environ.get("KIWIPY_PREFIX", "tutorial")  # keeps this workflow apart from others
QUEUE = f"{PREFIX}.simulations"  # the task queue of the workflow


def connect(url=URL):
    return kiwipy.sync.connect(
        url,
        message_exchange=f"{PREFIX}.messages",  # RPC and broadcasts
        task_exchange=f"{PREFIX}.tasks",
        task_queue=QUEUE,  # the default queue is the workflow's: no second queue
    )
