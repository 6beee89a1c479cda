"""IOMMU fact: whether DMA goes through IOMMU translation.

Usage::

    from facts.iommu import IommuState
    if host.get_fact(IommuState)["mode"] == "translated": ...
"""

from __future__ import annotations

import re
from typing import Literal, TypedDict

from pyinfra.api import FactBase


class IommuInfo(TypedDict):
    mode: Literal["off", "passthrough", "translated"]
    groups: int
    types: list[str]


class IommuState(FactBase[IommuInfo]):
    """
    IOMMU mode from the default domain type of each ``/sys/kernel/iommu_groups/N/type``:
    no groups -> ``off``; every group ``identity`` -> ``passthrough`` (``iommu=pt``);
    otherwise ``translated`` (``DMA``, ``DMA-FQ``). A group without a readable type
    file counts with type ``unknown``.

    .. code:: python

        {"mode": "translated", "groups": 12, "types": ["DMA-FQ"]}

    ``types`` are the distinct types, sorted.
    Default: ``{"mode": "off", "groups": 0, "types": []}``.
    """

    def command(self) -> str:
        return (
            "for g in /sys/kernel/iommu_groups/*; do "
            '[ -d "$g" ] || continue; '
            'echo "${g##*/}=$(cat "$g/type" 2>/dev/null)"; '
            "done; true"
        )

    @staticmethod
    def default() -> IommuInfo:
        return IommuInfo(mode="off", groups=0, types=[])

    def process(self, output: list[str]) -> IommuInfo:
        types = []
        for line in output:
            match = re.fullmatch(r"([0-9]+)=(.*)", line.strip())
            if match:
                types.append(match.group(2).strip() or "unknown")
        if not types:
            return self.default()
        mode = "passthrough" if all(t == "identity" for t in types) else "translated"
        return IommuInfo(mode=mode, groups=len(types), types=sorted(set(types)))
