"""What /proc says about processes the tests and benchmarks started (Linux): children, CPU
time, resident memory, open files."""

from __future__ import annotations

import os
import re
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_RSS = re.compile(r"^VmRSS:\s+(\d+) kB", re.M)
_HWM = re.compile(r"^VmHWM:\s+(\d+) kB", re.M)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields follow the last ')'.
    return stat.rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    """Direct child processes of `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`."""
    found: set[int] = set()
    todo = children(pid)
    while todo:
        child = todo.pop()
        found.add(child)
        todo += children(child)
    return found


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of `pid` (all its threads) so far; None once it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime: fields 14 and 15


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and every process below it so far, those that ended
    included (a child reaped by its parent counts in the parent's children's times): what a
    supervisor and its children spent, through restarts of the children."""
    total = 0.0
    for each in (pid, *descendants(pid)):
        fields = _stat_fields(each)
        if fields is not None:  # utime, stime, cutime, cstime: fields 14 to 17
            total += sum(int(f) for f in fields[11:15]) / _CLK_TCK
    return total


def rss_kb(pids: list[int]) -> int:
    """Sum of VmRSS over `pids` (kB); a process that is gone counts 0."""
    total = 0
    for pid in pids:
        try:
            match = _RSS.search(Path(f"/proc/{pid}/status").read_text())
        except OSError:
            continue
        total += int(match[1]) if match else 0
    return total


def reset_peak_rss(pid: int) -> None:
    """Make `pid`'s peak resident memory (VmHWM) its present one (Linux 4.0 and later), so
    that `peak_rss_kb` then tells the most it held from now on."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_kb(pid: int) -> int:
    """The most resident memory `pid` held (VmHWM, kB) since it started or since
    `reset_peak_rss`: a peak between two reads is not missed, as VmRSS read now would."""
    match = _HWM.search(Path(f"/proc/{pid}/status").read_text())
    assert match, f"no VmHWM for process {pid}"
    return int(match[1])


def open_fds(pids: list[int]) -> int:
    """File descriptors open in `pids`, summed; a process that is gone counts 0."""
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return total
