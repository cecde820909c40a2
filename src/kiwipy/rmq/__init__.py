"""kiwipy 0.9's RabbitMQ names, mapped onto kiwipy's asyncio core and blocking facade.

* :class:`RmqThreadCommunicator` / :func:`connect`: the blocking communicator
  (:class:`kiwipy.sync.Communicator` with kiwipy 0.9's constructor);
* :class:`RmqCommunicator` / :func:`async_connect`: the asyncio one
  (:class:`kiwipy.aio.AsyncCommunicator` with kiwipy 0.9's coroutine API);
* the task queue and incoming task classes of both.

Every communicator here also works over ``memory://NAME``, the in-process broker.
"""

from kiwipy.rmq import communicator, defaults, messages, tasks, threadcomms, utils  # noqa: F401
from kiwipy.rmq.communicator import RmqCommunicator, async_connect
from kiwipy.rmq.tasks import RmqIncomingTask, RmqTaskPublisher, RmqTaskQueue, RmqTaskSubscriber
from kiwipy.rmq.threadcomms import RmqThreadCommunicator, RmqThreadTaskQueue, connect

__all__ = (  # noqa: RUF022 (kiwipy 0.9's order)
    "RmqTaskSubscriber",
    "RmqTaskPublisher",
    "RmqTaskQueue",
    "RmqIncomingTask",
    "RmqCommunicator",
    "async_connect",
    "RmqThreadCommunicator",
    "RmqThreadTaskQueue",
    "connect",
)
