"""What a run measures: the modes, the measurements and the figures made from them.

A *measurement* (:class:`Key`) is one driver process of one implementation running one pattern
once; a *figure* names one metric of a measurement per implementation (``ours``, ``raw``,
``kiwipy09``). Figures of different implementations that are the same pattern share a
measurement: kiwipy 0.9's batch send is its loop of blocking sends, and the raw baseline's batch
and asyncio styles are both "every confirm in flight".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

IMPLS = ("ours", "raw", "kiwipy09")
SCRIPTS = {"ours": "patterns_ours.py", "raw": "patterns_raw.py", "kiwipy09": "patterns_kiwipy09.py"}

#: The driver pattern of each implementation for each way of sending tasks.
TASK_STYLES: Mapping[str, Mapping[str, str]] = {
    "sync": {"ours": "tasks_sync", "raw": "tasks_seq", "kiwipy09": "tasks_sync"},
    "sync_batch": {"ours": "tasks_batch", "raw": "tasks_pipelined", "kiwipy09": "tasks_sync"},
    "async": {"ours": "tasks_async", "raw": "tasks_pipelined", "kiwipy09": "tasks_async"},
}
RPC_PIPELINED = {"ours": "rpc_async", "raw": "rpc_pipelined", "kiwipy09": "rpc_async"}
RPC_LATENCY = {impl: "rpc_latency" for impl in IMPLS}
BROADCAST = {"ours": "broadcast_sync", "raw": "broadcast_seq", "kiwipy09": "broadcast_sync"}
CONNECT = {impl: "connect" for impl in IMPLS}


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    small: int
    main: int
    large: int
    #: Repetitions of each side-by-side group (ours, raw, kiwipy09).
    reps: int
    #: Repetitions of the scaling runs (the asyncio reply pattern at the small and large N).
    solo_reps: int
    warmup: int
    calls: int
    #: Every pattern at every size; otherwise the main size and only the figures that matter.
    full: bool

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.small, self.main, self.large) if self.full else (self.main,)

    def suffix(self, n: int) -> str:
        """How figure names mark ``n``: nothing for the main size, else the nominal size
        (``_500`` / ``_8000`` in every mode, so the names stay the same)."""
        return {self.main: "", self.small: "_500", self.large: "_8000"}[n]


MODES = {
    "tiny": Mode("tiny", 10, 40, 80, reps=1, solo_reps=1, warmup=2, calls=20, full=False),
    # 3 minutes: the scaling runs (ours and raw, 500 and 8000 tasks) are done twice.
    "quick": Mode("quick", 500, 2000, 8000, reps=3, solo_reps=2, warmup=5, calls=200, full=False),
    "full": Mode("full", 500, 2000, 8000, reps=5, solo_reps=5, warmup=20, calls=1000, full=True),
}


@dataclasses.dataclass(frozen=True)
class Key:
    """One measurement: a driver of ``impl`` running ``pattern`` once."""

    impl: str
    pattern: str
    n: int = 0
    no_reply: bool = False
    subs: int = 0
    calls: int = 0

    def argv(self, warmup: int) -> list[str]:
        args = ["--pattern", self.pattern, "--n", str(self.n), "--warmup", str(warmup)]
        args += ["--subs", str(self.subs), "--calls", str(self.calls)]
        return [*args, "--no-reply"] if self.no_reply else args

    @property
    def label(self) -> str:
        parts = [self.impl, self.pattern]
        parts += [f"n={self.n}"] if self.n else []
        parts += ["no-reply"] if self.no_reply else []
        parts += [f"subs={self.subs}"] if self.subs else []
        parts += [f"calls={self.calls}"] if self.calls else []
        return " ".join(parts)


@dataclasses.dataclass(frozen=True)
class Figure:
    """``metric`` of one measurement per implementation (``None``: not measured)."""

    name: str
    metric: str
    keys: Mapping[str, Key]
    unit: str = "/s"


@dataclasses.dataclass(frozen=True)
class Ratio:
    """``metric`` of ``over`` divided by ``metric`` of ``under``, per implementation measured."""

    name: str
    metric: str
    over: Mapping[str, Key]
    under: Mapping[str, Key]


def _each(
    patterns: Mapping[str, str], n: int = 0, no_reply: bool = False, subs: int = 0, calls: int = 0
) -> dict[str, Key]:
    """The same measurement for every implementation (each with its own pattern)."""
    return {
        impl: Key(impl, pattern, n, no_reply, subs, calls) for impl, pattern in patterns.items()
    }


def _task_figures(mode: Mode, n: int) -> list[Figure]:
    suffix = mode.suffix(n)
    figures = []
    for reply in (True, False):
        for style, patterns in TASK_STYLES.items():
            if not (mode.full or reply or style == "sync_batch"):
                continue
            name = f"tasks_{'reply' if reply else 'noreply'}_{style}{suffix}"
            figures.append(Figure(name, "rate_per_s", _each(patterns, n=n, no_reply=not reply)))
    return figures


def _message_figures(mode: Mode, n: int) -> list[Figure]:
    suffix = mode.suffix(n)
    figures = [Figure(f"rpc_pipelined_async{suffix}", "rate_per_s", _each(RPC_PIPELINED, n=n))]
    for subs in (1, 4) if mode.full else (4,):
        keys = _each(BROADCAST, n=n, subs=subs)
        figures.append(Figure(f"broadcast_{subs}subs_sync{suffix}", "rate_per_s", keys))
    return figures


def figures(mode: Mode) -> list[Figure]:
    """Every figure of ``mode``, in the order they are measured and printed."""
    out: list[Figure] = []
    for n in mode.sizes:
        out += _task_figures(mode, n)
    if not mode.full:  # the async reply pattern at the other sizes, for the scaling ratios
        for n in (mode.small, mode.large):
            key = Key("ours", TASK_STYLES["async"]["ours"], n=n)
            out.append(Figure(f"tasks_reply_async{mode.suffix(n)}", "rate_per_s", {"ours": key}))
    for n in mode.sizes:
        out += _message_figures(mode, n)
    latency = _each(RPC_LATENCY, calls=mode.calls)
    out.append(Figure("rpc_p50_ms_sync", "p50_ms", latency, unit="ms"))
    out.append(Figure("rpc_p99_ms_sync", "p99_ms", latency, unit="ms"))
    connect = _each(CONNECT)
    out.append(Figure("connect_first_reply_s", "first_reply_s", connect, unit="s"))
    out.append(Figure("connect_again_first_reply_s", "second_first_reply_s", connect, unit="s"))
    out.append(Figure("cold_first_reply_s", "cold_first_reply_s", connect, unit="s"))
    return out


def ratios(mode: Mode) -> list[Ratio]:
    """How the asyncio reply pattern scales from the small to the large N: ours, and raw aiormq
    (every send in flight) as the baseline of what the pattern itself costs."""
    styles = {impl: TASK_STYLES["async"][impl] for impl in ("ours", "raw")}
    large = {impl: Key(impl, pattern, n=mode.large) for impl, pattern in styles.items()}
    small = {impl: Key(impl, pattern, n=mode.small) for impl, pattern in styles.items()}
    return [
        Ratio("tasks_reply_async_8000_over_500", "rate_per_s", large, small),
        Ratio("rss_8000_over_500", "driver_rss_mb", large, small),
        # A worker holds at most its prefetch: its peak must not grow with the sender's N.
        Ratio("worker_rss_8000_over_500", "worker_rss_mb", large, small),
    ]


@dataclasses.dataclass(frozen=True)
class Group:
    """Measurements done one after the other, ``reps`` times (their order rotating)."""

    keys: list[Key]
    reps: int


def groups(
    figure_list: list[Figure], ratio_list: list[Ratio], impls: tuple[str, ...], mode: Mode
) -> list[Group]:
    """The measurements, grouped by the figure that first needs them."""
    seen: set[Key] = set()
    out = []
    scaling = [keys for ratio in ratio_list for keys in (ratio.under, ratio.over)]
    for keys in [figure.keys for figure in figure_list] + scaling:
        group = [key for impl, key in keys.items() if impl in impls and key not in seen]
        seen.update(group)
        if group:
            side_by_side = len(keys) > 1 and keys not in scaling
            out.append(Group(group, mode.reps if side_by_side else mode.solo_reps))
    return out
