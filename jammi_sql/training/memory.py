"""How much memory a training step may still take: free GPU memory, or the physical memory
this process can get (what the kernel could hand out now, within a container's limit).

On Linux the figure is ``MemAvailable`` (free pages plus the page cache the kernel reclaims on
demand; ``MemFree`` alone would call memory full after reading a large file), capped by a
cgroup's ``memory.max`` minus what the group already uses. Elsewhere: free pages where the OS
reports them, else half the physical memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

MEMINFO = Path("/proc/meminfo")
CGROUP = Path("/sys/fs/cgroup")  # cgroup v2: memory.max, memory.current


def free_memory(device: torch.device) -> int:
    """Bytes a training step may still use on ``device``."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    available = _meminfo_available() or _sysconf_available()
    limit = _cgroup_room()
    return min(available, limit) if limit is not None else available


def _meminfo_available() -> int | None:
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _sysconf_available() -> int:
    """Free pages, else half of all pages (macOS reports only the total), else 4 GiB."""
    for name, share in (("SC_AVPHYS_PAGES", 1), ("SC_PHYS_PAGES", 2)):
        try:
            return os.sysconf(name) * os.sysconf("SC_PAGE_SIZE") // share
        except (ValueError, OSError, AttributeError):
            continue
    return 4 << 30  # nothing to go by: assume little


def _cgroup_room() -> int | None:
    """What a cgroup v2 memory limit still leaves, or None when there is no limit."""
    try:
        limit = (CGROUP / "memory.max").read_text().strip()
        used = int((CGROUP / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    if not limit.isdigit():  # "max": no limit
        return None
    return max(0, int(limit) - used)
