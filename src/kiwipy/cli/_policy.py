"""``kiwipy policy``: the broker policy for poison tasks, printed or applied.

A policy, unlike queue arguments, applies to a queue that exists already and does not change
its declaration, so kiwipy 0.9 peers and ours keep declaring it alike. It sets the delivery
limit (a quorum queue's count of deliveries, RabbitMQ 3.8+) and where a task over it goes: the
dead-letter queue, at least once.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
import subprocess

__all__ = ("PoisonPolicy", "apply_policy")


@dataclasses.dataclass(frozen=True)
class PoisonPolicy:
    queue: str
    dead_letter_queue: str
    delivery_limit: int = 20
    vhost: str = "/"

    @property
    def name(self) -> str:
        return f"kiwipy-poison-{self.queue}"

    @property
    def pattern(self) -> str:
        return f"^{re.escape(self.queue)}$"

    @property
    def definition(self) -> dict[str, object]:
        return {
            "delivery-limit": self.delivery_limit,
            "dead-letter-exchange": "",
            "dead-letter-routing-key": self.dead_letter_queue,
            # Quorum queues only: the task reaches the dead-letter queue before it leaves this one.
            "dead-letter-strategy": "at-least-once",
            "overflow": "reject-publish",
        }

    def rabbitmqctl_arguments(self) -> list[str]:
        return [
            "set_policy",
            "-p",
            self.vhost,
            self.name,
            self.pattern,
            json.dumps(self.definition, separators=(",", ":")),
            "--apply-to",
            "queues",
        ]

    def command(self) -> str:
        return "rabbitmqctl " + " ".join(map(shlex.quote, self.rabbitmqctl_arguments()))


def apply_policy(policy: PoisonPolicy) -> str:
    """Run ``rabbitmqctl set_policy`` for ``policy``; its output. Needs the broker's machine."""
    ctl = shutil.which("rabbitmqctl") or shutil.which("rabbitmqctl", path="/usr/sbin:/sbin")
    if ctl is None:
        raise FileNotFoundError("rabbitmqctl is not on this machine: run the printed command there")
    done = subprocess.run(  # noqa: S603 - rabbitmqctl with arguments we built
        [ctl, *policy.rabbitmqctl_arguments()], capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip() or done.stdout.strip())
    return done.stdout.strip()
