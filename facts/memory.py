"""System memory: what the kernel reports, and the RAM installed in the box.

Usage::

    from facts.memory import MemTotal, installed_ram_bytes
    mem_total = host.get_fact(MemTotal)                        # 134,486,163,456 on a 128 GiB box
    installed = installed_ram_bytes(mem_total, vram_total=512 << 20)   # 137,438,953,472
    installed = host_installed_ram(mem_total, host.get_fact(GpuMemory))  # the same from the facts
"""

from __future__ import annotations

import re

from pyinfra.api import FactBase

GIB = 1 << 30
RAM_STEP = 8 * GIB  # Strix Halo boxes ship with 32, 64, 96 or 128 GiB of soldered RAM


class MemTotal(FactBase[int | None]):
    """``MemTotal`` of /proc/meminfo in bytes: RAM less the BIOS carve-out and the kernel's reserve.

    Returns bytes, e.g. for a 128 GiB box with a 512 MiB carve-out:

    .. code:: python

        134486163456

    Default: None (no /proc/meminfo, or no MemTotal line in kB).
    """

    def command(self) -> str:
        return "grep '^MemTotal:' /proc/meminfo 2>/dev/null; true"

    def process(self, output: list[str]) -> int | None:
        match = re.fullmatch(r"MemTotal:\s+([0-9]+) kB", output[0].strip()) if output else None
        return int(match.group(1)) * 1024 if match else None


def installed_ram_bytes(mem_total: int, vram_total: int = 0) -> int:
    """The RAM soldered in the box: MemTotal plus the carve-out, rounded up to a multiple of 8 GiB.

    The firmware and kernel keep well under 8 GiB, so the rounding recovers the installed size:
    a 128 GiB box with a 512 MiB carve-out shows MemTotal of about 125.3 GiB -> 128 GiB.
    """
    seen = mem_total + vram_total
    return -(-seen // RAM_STEP) * RAM_STEP


def host_installed_ram(mem_total: int, gpu_memory: list[dict]) -> int:
    """installed_ram_bytes() from the MemTotal and GpuMemory facts: the carve-out is the first card's VRAM.

    verify.py (the GTT row) and grub.py (the ttm arguments) size the GPU's share from this one number.
    """
    vram_total = (gpu_memory[0].get("vram_total") if gpu_memory else None) or 0
    return installed_ram_bytes(mem_total, vram_total)
