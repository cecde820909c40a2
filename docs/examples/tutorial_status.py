# docs/examples/tutorial_status.py
"""Ask a worker what it is doing, by RPC."""

import sys

from tutorial_config import connect

import kiwipy

name = sys.argv[1] if len(sys.argv) > 1 else "worker-1"
with connect() as comm:
    try:
        print(comm.rpc_send(name, "status", deadline=10).result(timeout=15))
    except kiwipy.UnroutableError:
        print(f"{name} is not running")
