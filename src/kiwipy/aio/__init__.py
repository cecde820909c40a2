"""kiwipy for asyncio code.

communicator = await kiwipy.aio.connect("amqp://guest:guest@127.0.0.1/")
await communicator.add_rpc_subscriber(lambda comm, msg: msg * 2, "doubler")
future = await communicator.rpc_send("doubler", 21)
assert await future == 42
"""

from kiwipy.aio._communicator import AsyncCommunicator, connect
from kiwipy.aio._incoming import IncomingTask, TaskState, current_incoming_task
from kiwipy.aio._tasks import AsyncTaskQueue
from kiwipy.aio._worker import Worker

__all__ = (
    "AsyncCommunicator",
    "AsyncTaskQueue",
    "IncomingTask",
    "TaskState",
    "Worker",
    "connect",
    "current_incoming_task",
)
