"""Firmware facts: installed AMD GPU firmware packages and the loaded MES firmware.

Usage::

    from facts.firmware import FirmwarePackages, MesFirmware, firmware_date
    versions = host.get_fact(FirmwarePackages)
    dates = [firmware_date(v) for v in versions.values()]
    mes = host.get_fact(MesFirmware, _sudo=True)  # None: debugfs not readable
"""

from __future__ import annotations

import re
from typing import TypedDict

from pyinfra.api import FactBase

from facts import parts


def package_query(deb: list[str], rpm: list[str]) -> str:
    """
    Shell snippet printing ``dpkg <status> <name> <version>`` for the Debian
    packages and ``rpm <name> <version>-<release>`` for the RPM ones, using
    whichever tools exist. Parse its output with ``installed_packages()``.
    """
    return (
        "if command -v dpkg-query >/dev/null 2>&1; then "
        "dpkg-query -W -f 'dpkg ${db:Status-Abbrev} ${Package} ${Version}\\n' "
        f"{' '.join(deb)} 2>/dev/null; fi; "
        "if command -v rpm >/dev/null 2>&1; then "
        "rpm -q --qf 'rpm %{NAME} %{VERSION}-%{RELEASE}\\n' "
        f"{' '.join(rpm)} 2>/dev/null; fi; "
    )


def installed_packages(output: list[str]) -> dict[str, str]:
    """
    ``{name: version}`` of installed packages from ``package_query()`` output.
    dpkg entries count only when installed (status ``ii``/``hi``, not ``rc``/``un``);
    other lines (rpm's "package X is not installed") are ignored.
    """
    packages = {}
    for line in output:
        fields = line.split()
        if len(fields) == 4 and fields[0] == "dpkg" and fields[1][1:2] == "i":
            packages[fields[2]] = fields[3]
        elif len(fields) == 3 and fields[0] == "rpm":
            packages[fields[1]] = fields[2]
    return packages


def firmware_date(version: str) -> int | None:
    """
    Upstream linux-firmware snapshot date (YYYYMMDD) of a package version:
    "20260110-1.fc43" -> 20260110, "1:20251125-1" -> 20251125,
    "20240318.git3b128b60-0ubuntu2.3" -> 20240318; None when there is none.
    """
    match = re.match(
        r"(?:[0-9]+:)?((?:19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01]))(?![0-9])",
        (version or "").strip(),
    )
    return int(match.group(1)) if match else None


class FirmwarePackages(FactBase[dict[str, str]]):
    """
    Installed versions of the packages carrying AMD GPU firmware: Debian/Ubuntu
    ``linux-firmware``, ``firmware-amd-graphics``, ``linux-firmware-amd-graphics``
    (dpkg), Fedora ``linux-firmware``, ``amd-gpu-firmware`` (rpm).

    .. code:: python

        {"linux-firmware": "20260110-1.fc43", "amd-gpu-firmware": "20260110-1.fc43"}

    Packages that are not installed are absent. Default: ``{}``.
    """

    def command(self) -> str:
        return (
            package_query(
                ["linux-firmware", "firmware-amd-graphics", "linux-firmware-amd-graphics"],
                ["linux-firmware", "amd-gpu-firmware"],
            )
            + "true"
        )

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        return installed_packages(output)


class MesInfo(TypedDict):
    dri: str
    mes: int | None
    mes_kiq: int | None


_MES_LINE = re.compile(r"(MES|MES_KIQ) feature version: *\S+, firmware version: *0x([0-9a-fA-F]+)")


class MesFirmware(FactBase[list[MesInfo] | None]):
    """
    Loaded MES / MES_KIQ firmware versions of each GPU, from
    ``/sys/kernel/debug/dri/N/amdgpu_firmware_info`` (needs root and debugfs;
    symlinked DRI dirs are skipped so each GPU appears once). Lines read look like
    ``MES feature version: 1, firmware version: 0x00000080``.

    .. code:: python

        [{"dri": "0", "mes": 128, "mes_kiq": 108}]

    A missing or garbled line gives None for that field. Default (no file
    readable, e.g. not root or no debugfs): None, meaning "MES not checked".
    """

    def command(self) -> str:
        return (
            "for f in /sys/kernel/debug/dri/*/amdgpu_firmware_info; do "
            "d=${f%/*}; "
            '[ -L "$d" ] && continue; '
            'i=$(cat "$f" 2>/dev/null) || continue; '
            "printf '## dri %s\\n%s\\n' \"${d##*/}\" \"$i\"; "
            "done; true"
        )

    def process(self, output: list[str]) -> list[MesInfo] | None:
        nodes: list[MesInfo] = []
        for name, lines in parts(output):
            if not name.startswith("dri "):
                continue
            nodes.append(MesInfo(dri=name[4:].strip(), mes=None, mes_kiq=None))
            for match in filter(None, (_MES_LINE.match(line.strip()) for line in lines)):
                nodes[-1][match.group(1).lower()] = int(match.group(2), 16)
        return nodes or None
