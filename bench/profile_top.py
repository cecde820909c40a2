"""Summarise a ``py-spy record --subprocesses --format raw`` file, driver and workers apart.

    python bench/profile_top.py PROFILE.txt [--top 15]

For each role: samples, the busiest functions by self time, the kiwipy functions by inclusive
time, and self time per package (the leaf frame's). ``run.py --profile DIR`` writes such files.
"""

from __future__ import annotations

import argparse
import collections
import re
from collections.abc import Iterator
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
#: Leaf frames that are blocked waiting (py-spy cannot always tell a blocked C call from work):
#: the selector, waits on locks and queues, the bench's pipe readers, kiwipy's idle callback
#: threads (their only self time is ``SimpleQueue.get``).
IDLE = (
    "EpollSelector.select",
    "Condition.wait",
    "Event.wait",
    "Lock.acquire",
    "wait_for_stop",
    "WorkerProcess._read",
    "CallbackThreads._work",
)


class Role:
    def __init__(self) -> None:
        self.samples = 0
        self.idle = 0
        self.self_time: collections.Counter[str] = collections.Counter()
        self.inclusive: collections.Counter[str] = collections.Counter()
        self.packages: collections.Counter[str] = collections.Counter()


def _package(path: str) -> str:
    path = path.split("/site-packages/", 1)[-1]
    if path.startswith("<frozen"):
        return "import"
    head = path.split("/", 1)[0]
    return head.removesuffix(".py") if "/" in path or head.endswith(".py") else path


def _stacks(path: Path) -> Iterator[tuple[str, list[str], int]]:
    """(role, frames, count) for each line: the role is that of the innermost process frame."""
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        process = max(i for i, frame in enumerate(frames) if frame.startswith("process "))
        role = "worker" if " worker " in frames[process] else "driver"
        yield role, frames[process + 1 :], int(count)


def summarise(path: Path) -> dict[str, Role]:
    roles: dict[str, Role] = collections.defaultdict(Role)
    for role_name, frames, count in _stacks(path):
        role = roles[role_name]
        role.samples += count
        if not frames:
            continue
        leaf = FRAME.match(frames[-1])
        if leaf is None:
            continue
        if leaf["func"].startswith(IDLE):
            role.idle += count
            continue
        role.self_time[f"{leaf['func']} ({leaf['file']})"] += count
        role.packages[_package(leaf["file"])] += count
        for frame in set(frames):
            match = FRAME.match(frame)
            if match and "kiwipy/" in match["file"]:
                role.inclusive[f"{match['func']} ({match['file']})"] += count
    return roles


def render(roles: dict[str, Role], top: int) -> str:
    out = []
    for name, role in sorted(roles.items()):
        busy = role.samples - role.idle
        out.append(f"## {name}: {role.samples} samples, {busy} busy (idle waits left out)")

        def share(count: int, busy: int = busy) -> str:
            return f"{100.0 * count / max(busy, 1):5.1f}%"

        out.append("self time:")
        out += [f"  {share(c)}  {f}" for f, c in role.self_time.most_common(top)]
        out.append("kiwipy functions, inclusive:")
        out += [f"  {share(c)}  {f}" for f, c in role.inclusive.most_common(top)]
        packages = ", ".join(f"{p} {share(c).strip()}" for p, c in role.packages.most_common(10))
        out.append(f"self time by package: {packages}\n")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print(render(summarise(args.profile), args.top))


if __name__ == "__main__":
    main()
