"""The blocking facade: an event loop on a daemon thread, subscribers on a callback thread."""

from kiwipy.aio._incoming import current_incoming_task
from kiwipy.sync._communicator import Communicator, connect
from kiwipy.sync._tasks import BlockingIncomingTask, TaskQueue

__all__ = ("BlockingIncomingTask", "Communicator", "TaskQueue", "connect", "current_incoming_task")
