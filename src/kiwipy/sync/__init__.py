"""The blocking facade: an event loop on a daemon thread, subscribers on a callback thread."""

from kiwipy.aio.incoming import current_incoming_task
from kiwipy.sync.communicator import Communicator, connect
from kiwipy.sync.tasks import BlockingIncomingTask, TaskQueue

__all__ = ("BlockingIncomingTask", "Communicator", "TaskQueue", "connect", "current_incoming_task")
