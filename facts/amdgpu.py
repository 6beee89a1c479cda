"""amdgpu facts: GPU memory pools, TTM limits and KFD (ROCm) GPU nodes.

Usage::

    from facts.amdgpu import GpuMemory, KfdGpuNodes, TtmLimits
    for card in host.get_fact(GpuMemory):
        print(card["card"], card["gtt_total"])
"""

from __future__ import annotations

import re
from typing import TypedDict

from pyinfra.api import FactBase

from facts import parts

MEM_KEYS = ("vram_total", "vram_used", "gtt_total", "gtt_used")


def to_int(text: str | None) -> int | None:
    """Parse a non-negative decimal integer; None for anything else."""
    text = (text or "").strip()
    return int(text) if re.fullmatch(r"[0-9]+", text) else None


def gfx_target_name(version: int) -> str:
    """KFD ``gfx_target_version`` -> LLVM target: 110501 -> "gfx1151", 90010 -> "gfx90a"."""
    major, minor, step = version // 10000, (version // 100) % 100, version % 100
    return f"gfx{major}{minor}{step:x}"


class CardMemory(TypedDict):
    card: str
    vram_total: int | None
    vram_used: int | None
    gtt_total: int | None
    gtt_used: int | None


class GpuMemory(FactBase[list[CardMemory]]):
    """
    VRAM and GTT sizes (bytes) of every amdgpu DRM card, from
    ``/sys/class/drm/cardN/device/mem_info_{vram,gtt}_{total,used}``.
    Connectors (``card1-DP-1``) and cards of other drivers are skipped.

    .. code:: python

        [{"card": "card1", "vram_total": 536870912, "vram_used": 123,
          "gtt_total": 128849018880, "gtt_used": 456}]

    A missing or non-integer value is None. Default (no amdgpu card): ``[]``.
    """

    def command(self) -> str:
        return (
            "for c in /sys/class/drm/card[0-9]*; do "
            'case "${c##*/}" in *-*) continue;; esac; '
            "grep -qx DRIVER=amdgpu \"$c/device/uevent\" 2>/dev/null || continue; "
            'echo "## ${c##*/}"; '
            "for k in vram_total vram_used gtt_total gtt_used; do "
            'echo "$k=$(cat "$c/device/mem_info_$k" 2>/dev/null)"; '
            "done; done; true"
        )

    @staticmethod
    def default() -> list[CardMemory]:
        return []

    def process(self, output: list[str]) -> list[CardMemory]:
        cards: list[CardMemory] = []
        for name, lines in parts(output):
            if not re.fullmatch(r"card[0-9]+", name):
                continue
            card = CardMemory(card=name, **dict.fromkeys(MEM_KEYS))
            for line in lines:
                key, _, value = line.strip().partition("=")
                if key in MEM_KEYS:
                    card[key] = to_int(value)
            cards.append(card)
        return cards


class TtmLimitsInfo(TypedDict):
    module: str
    pages_limit: int | None
    page_pool_size: int | None


class TtmLimits(FactBase[TtmLimitsInfo | None]):
    """
    TTM memory limits (in 4 KiB pages) from ``/sys/module/amdttm/parameters/``
    (AMD's DKMS driver, preferred when present) or ``/sys/module/ttm/parameters/``.

    .. code:: python

        {"module": "ttm", "pages_limit": 31457280, "page_pool_size": 31457280}

    A missing or malformed number is None. Default (neither module loaded): None.
    """

    def command(self) -> str:
        return (
            "for m in amdttm ttm; do "
            "d=/sys/module/$m/parameters; "
            '[ -d "$d" ] || continue; '
            'echo "module=$m"; '
            'echo "pages_limit=$(cat "$d/pages_limit" 2>/dev/null)"; '
            'echo "page_pool_size=$(cat "$d/page_pool_size" 2>/dev/null)"; '
            "break; done; true"
        )

    def process(self, output: list[str]) -> TtmLimitsInfo | None:
        values = {}
        for line in output:
            key, _, value = line.strip().partition("=")
            values.setdefault(key, value)
        module = values.get("module")
        if module not in ("amdttm", "ttm"):
            return None
        return TtmLimitsInfo(
            module=module,
            pages_limit=to_int(values.get("pages_limit")),
            page_pool_size=to_int(values.get("page_pool_size")),
        )


class KfdNode(TypedDict):
    node: int
    gfx_target_version: int | None
    gfx_target: str | None
    simd_count: int
    mem_bank_bytes: int | None


class KfdGpuNodes(FactBase[list[KfdNode]]):
    """
    GPU nodes of the KFD (ROCm compute) topology: every
    ``/sys/class/kfd/kfd/topology/nodes/N/properties`` with ``simd_count > 0``
    (CPU nodes have 0), plus ``size_in_bytes`` of ``nodes/N/mem_banks/0/properties``.

    .. code:: python

        [{"node": 1, "gfx_target_version": 110501, "gfx_target": "gfx1151",
          "simd_count": 80, "mem_bank_bytes": 128849018880}]

    Sorted by node number. Default (no /dev/kfd driver loaded): ``[]``.
    """

    def command(self) -> str:
        return (
            "for n in /sys/class/kfd/kfd/topology/nodes/*; do "
            'p=$(cat "$n/properties" 2>/dev/null) || continue; '
            'm=$(cat "$n/mem_banks/0/properties" 2>/dev/null); '
            "printf '## node %s\\n%s\\n## mem_bank\\n%s\\n' \"${n##*/}\" \"$p\" \"$m\"; "
            "done; true"
        )

    @staticmethod
    def default() -> list[KfdNode]:
        return []

    def process(self, output: list[str]) -> list[KfdNode]:
        nodes: list[tuple[int, dict, dict]] = []
        node = None  # the node the lines belong to: its properties, then its mem_bank
        for name, lines in parts(output):
            if name.startswith("node "):
                number = name[5:].strip()
                node = (int(number), {}, {}) if number.isdigit() and number.isascii() else None
                nodes += [node] if node else []
                section = node[1] if node else None
            else:
                section = node[2] if node and name == "mem_bank" else None
            for line in lines if section is not None else []:
                key, _, value = line.strip().partition(" ")
                section[key] = value

        result: list[KfdNode] = []
        for number, props, bank in sorted(nodes, key=lambda n: n[0]):
            simd_count = to_int(props.get("simd_count"))
            if not simd_count:
                continue
            version = to_int(props.get("gfx_target_version"))
            result.append(
                KfdNode(
                    node=number,
                    gfx_target_version=version,
                    gfx_target=gfx_target_name(version) if version else None,
                    simd_count=simd_count,
                    mem_bank_bytes=to_int(bank.get("size_in_bytes")),
                )
            )
        return result
