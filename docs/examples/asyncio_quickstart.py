# docs/examples/asyncio_quickstart.py
import asyncio
import os

import kiwipy
import kiwipy.aio

url = os.environ.get("KIWIPY_URL", "memory://docs")
prefix = os.environ.get("KIWIPY_PREFIX", "kiwipy")
names = {"message_exchange": f"{prefix}.messages", "task_exchange": f"{prefix}.tasks"}


async def double(comm, task):  # subscribers may be coroutine functions
    await asyncio.sleep(0.01)
    return task * 2


async def main():
    events = asyncio.Queue()

    def on_event(comm, body, sender, subject, correlation_id):
        events.put_nowait((subject, body))  # on the event loop: no lock needed

    async with kiwipy.aio.connect(url, task_queue=f"{prefix}.tasks", **names) as comm:
        await comm.add_task_subscriber(double)
        await comm.add_rpc_subscriber(lambda comm, msg: f"pong {msg}", "process-42")
        await comm.add_broadcast_subscriber(kiwipy.BroadcastFilter(on_event, subject="state.*"))

        future = await comm.task_send(21)  # returns once the broker has the task
        print("task result:", await future)
        answer = await comm.rpc_send("process-42", "ping")
        print("rpc answer:", await answer)
        # One await: task_call and rpc_call return the result itself.
        result, reply = await comm.task_call(5), await comm.rpc_call("process-42", 1)
        print("task_call:", result, "rpc_call:", reply)
        await comm.broadcast_send({"pk": 42}, sender=42, subject="state.done")
        print("event:", *await asyncio.wait_for(events.get(), timeout=10))


asyncio.run(main())
