"""How many CPU threads torch uses: the `--threads` / `[train] threads` setting.

Owns: resolving a setting (`blockqnn.settings.threads`) to a count by counting the cores
this process may use (visible, physical, currently busy), resolving a setting to a thread
count once per process, dividing it between local workers (`share`) and applying it to torch
(`configure_threads`, which the trainer calls before every CPU training). Must not import
torch at module level (the config imports this module).

Why not simply every core: torch's intra-op threads spin and synchronise at every op, so a
thread that shares its core with another job slows every step of the network, not just its
own part. On a 2-core machine with one core busy elsewhere, 2 threads ran a small network
at 25 images/s and 1 thread at 277 images/s (issue 12). The policies:

- `all`: every core this process may run on (affinity / cpuset), the old behaviour.
- `physical`: one thread per physical core of those (hyper-threads rarely help convolutions).
- `minus-one`: every core but one, left to the rest of the machine.
- `auto` (the default, measured with benchmarks/threads.py; docs/benchmarks.md, "Threads"):
  the cores not busy right now, sampled over `SAMPLE_S` from /proc/stat (the 1-minute load
  average where there is none), at most the physical cores, at least 1; an
  `OMP_NUM_THREADS` in the environment is taken as the answer instead.
- an integer N: exactly N threads.

The count is resolved once per process and kept: a load-aware count taken later would see
this process's own training as somebody else's load and shrink itself.
"""

from __future__ import annotations

import os
import time
from functools import cache
from pathlib import Path

from blockqnn.settings.threads import DEFAULT, parse

SAMPLE_S = 0.2  # how long `auto` watches the CPUs; short, as every command pays it once

_override: str | None = None  # `--threads` given on the command line: wins over a config
_chosen: str | None = None  # the setting of this process's config
_resolved: tuple[str, int] | None = None  # (setting, count) once resolved


def _visible_cpu_ids() -> list[int] | None:
    """The ids of the CPUs this process may run on (taskset, cgroup cpusets); None off Linux."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None


def visible_cores() -> int:
    """CPU cores this process may run on (respects taskset and cgroup cpusets)."""
    ids = _visible_cpu_ids()
    return len(ids) if ids is not None else os.cpu_count() or 1


def physical_cores(sysfs: Path = Path("/sys/devices/system/cpu")) -> int:
    """Physical cores among the visible ones: distinct (package, core) pairs of Linux's CPU
    topology; the visible count where the topology cannot be read."""
    ids = _visible_cpu_ids()
    if not ids:
        return visible_cores()
    cores: set[tuple[str, str]] = set()
    try:
        for cpu in ids:
            topo = sysfs / f"cpu{cpu}" / "topology"
            package = (topo / "physical_package_id").read_text().strip()
            cores.add((package, (topo / "core_id").read_text().strip()))
    except OSError:
        return len(ids)
    return max(1, len(cores))


def _cpu_times(stat: Path) -> dict[int, tuple[int, int]]:
    """cpu id -> (idle + iowait, total) jiffies from /proc/stat."""
    out: dict[int, tuple[int, int]] = {}
    for line in stat.read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(v) for v in values[:8]]
        out[int(name[3:])] = (ticks[3] + ticks[4], sum(ticks))
    return out


def busy_cores(sample_s: float = SAMPLE_S, stat: Path = Path("/proc/stat")) -> float:
    """How many of the visible cores other work keeps busy now: the busy fraction of each,
    summed, over `sample_s`; without /proc/stat the 1-minute load average, scaled to the
    visible share of the machine. 0.0 when neither can be read."""
    ids = _visible_cpu_ids()
    try:
        before = _cpu_times(stat)
        time.sleep(sample_s)
        after = _cpu_times(stat)
    except (OSError, ValueError, IndexError):
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            return 0.0
        return load * visible_cores() / (os.cpu_count() or 1)
    busy = 0.0
    for cpu in ids if ids is not None else sorted(after):
        if cpu not in before or cpu not in after:
            continue
        idle = after[cpu][0] - before[cpu][0]
        total = after[cpu][1] - before[cpu][1]
        if total > 0:
            busy += 1.0 - idle / total
    return busy


def resolve(
    setting: str,
    *,
    cores: int | None = None,
    physical: int | None = None,
    busy: float | None = None,
    environ: dict[str, str] | None = None,
) -> int:
    """The thread count a setting gives on this machine; `cores`, `physical`, `busy` and
    `environ` replace what is measured (for tests and the benchmark)."""
    setting = parse(setting)
    if setting.isdigit():
        return int(setting)
    n = cores if cores is not None else visible_cores()
    if setting == "all":
        return n
    if setting == "minus-one":
        return max(1, n - 1)
    phys = min(n, physical if physical is not None else physical_cores())
    if setting == "physical":
        return max(1, phys)
    env = os.environ if environ is None else environ
    omp = env.get("OMP_NUM_THREADS", "").strip()
    # auto: the environment's explicit answer (ASCII: "²" passes isdigit, not int)
    if omp.isascii() and omp.isdigit() and int(omp) > 0:
        return int(omp)
    load = busy if busy is not None else busy_cores()
    # a core more than half busy counts as taken: round, not floor
    return max(1, min(phys, round(n - load)))


def share(total: int, workers: int) -> int:
    """Threads of each of `workers` local workers dividing `total` (at least one each)."""
    return max(1, total // max(1, workers))


def choose(setting: str | None, *, override: bool = False) -> None:
    """Set this process's setting: a config's (`override` False) or the command line's
    (`override` True, which a config's cannot replace). None leaves it unchanged."""
    global _override, _chosen
    if setting is None:
        return
    canonical = parse(setting)
    if override:
        _override = canonical
    else:
        _chosen = canonical


def current() -> str:
    """The setting in force: the command line's, else the config's, else `DEFAULT`."""
    return _override or _chosen or DEFAULT


def count() -> int:
    """Threads of the setting in force, resolved once per process (see the module doc)."""
    global _resolved
    setting = current()
    if _resolved is None or _resolved[0] != setting:
        _resolved = (setting, resolve(setting))
    return _resolved[1]


def reset() -> None:
    """Forget every choice (tests; a long-lived process starting a new job)."""
    global _override, _chosen, _resolved
    _override = _chosen = _resolved = None


def configure_threads() -> int:
    """Give torch the threads of the setting in force (`count`); returns the count."""
    import torch

    n = count()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


@cache
def cpu_name() -> str:
    """The CPU's model name (for reports and the latency cache key: timings are per CPU)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
