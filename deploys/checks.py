"""Host checks shared by the check steps (kernel.py, firmware.py) and verify.py.

The judgements are pure functions of facts and Settings, so unit tests feed them facts:

    row = kernel_row("ubuntu", {"release": "6.14.0-37-generic", "version": "6.14.0"}, Settings())
    row.verdict, row.why    # "FAIL", "older than kernel_min_version 6.16.9: ... linux-generic-hwe-24.04 ..."

A step turns rows into output and host failures with `act_on(rows, "Fail: ...")`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra import host, logger

from deploys.common import fail_host, warn
from deploys.settings import Settings
from facts.firmware import firmware_date
from facts.kernel import kernel_version, ubuntu_kernel

MES_GOOD, MES_BAD = 0x80, 0x83
# Where the kernel minimums come from (their defaults are in group_data/all.py):
# - kernel_min_version 6.16.9: older mainline kernels cap GTT near 15.5 GiB whatever ttm.pages_limit says;
# - kernel_recommended_version 6.18.4: the gfx1151 stability fixes; AMD's Strix Halo support table lists
#   ROCm 7.2.x (not 7.1.x) on it;
# - kernel_oem_min_version 6.14.0-1018: AMD's Strix Halo support table lists Ubuntu 24.04's OEM kernels
#   from 6.14.0-1018-oem as supported: Canonical backports the GTT and gfx1151 fixes into that series,
#   so its upstream number (6.14) says nothing about them.
OEM_REMEDY = "apt install linux-oem-24.04c (Ubuntu 24.04's OEM kernel series) and reboot"
KERNEL_REMEDY = {
    "fedora": "dnf upgrade --refresh 'kernel*' and reboot",
    "ubuntu": "install a newer kernel (Ubuntu 24.04: apt install linux-generic-hwe-24.04; or move to 25.10+) "
    "and reboot",
    "debian": "install a newer kernel from backports (Debian 13: apt install -t trixie-backports linux-image-amd64; "
    "Debian 12: bookworm-backports stops at 6.12, so upgrade to Debian 13 first) and reboot",
}
FIRMWARE_REMEDY = {
    "fedora": "dnf upgrade --refresh linux-firmware amd-gpu-firmware",
    "ubuntu": "apt install --only-upgrade linux-firmware",
    "debian": "apt install --only-upgrade firmware-amd-graphics (from backports if needed)",
}


@dataclass
class Row:
    """One judgement: subject, what was read, verdict, and the explanation when not ok."""

    subject: str
    value: str
    verdict: str = "ok"  # ok | WARN | FAIL | info
    why: str = ""


def kernel_row(distro: str, kernel: dict | None, s: Settings) -> Row:
    """FAIL below kernel_min_version, WARN below kernel_recommended_version; the fix for the distro.

    An Ubuntu OEM kernel (flavour ``-oem``) has its own minimum, kernel_oem_min_version (version and
    ABI number), and no warning above it: AMD supports gfx1151 on that series.

    >>> kernel_row("ubuntu", {"release": "6.14.0-1018-oem"}, Settings()).verdict
    'ok'
    """
    release = (kernel or {}).get("release", "?")
    version = kernel_version(release) if kernel else None
    remedy = KERNEL_REMEDY.get(distro, "install a newer kernel and reboot")
    if version is None:
        return Row("kernel", release, "FAIL", "cannot read the kernel release (uname -r)")
    ubuntu = ubuntu_kernel(release) if distro == "ubuntu" else None
    if ubuntu is not None and ubuntu[2] == "oem":
        if ubuntu[:2] < s.kernel_oem_min:
            return Row("kernel", release, "FAIL",
                       f"an Ubuntu OEM kernel older than kernel_oem_min_version {s.kernel_oem_min_version} "
                       f"(AMD supports gfx1151 on OEM kernels from {s.kernel_oem_min_version}-oem); "
                       f"{OEM_REMEDY}")
        return Row("kernel", f"{release} (Ubuntu OEM, at least {s.kernel_oem_min_version})")
    if version < s.kernel_min:
        return Row("kernel", release, "FAIL",
                   f"older than kernel_min_version {s.kernel_min_version}: ROCm sees only about 15.5 GiB "
                   f"of GTT on it; {remedy}")
    if version < s.kernel_recommended:
        return Row("kernel", release, "WARN",
                   f"older than {s.kernel_recommended_version}, which has the gfx1151 stability fixes "
                   f"ROCm 7.2 needs; {remedy}")
    return Row("kernel", release)


def firmware_rows(distro: str, packages: dict[str, str], mes: list[dict] | None, s: Settings) -> list[Row]:
    """The firmware package (snapshot compared on Fedora only) and the loaded MES version (where readable).

    Fedora's packages are upstream snapshots: one in firmware_bad_snapshots fails (20251125 ships MES
    0x83); any other passes, including 20251111, the rollback AMD engineers advise. Where debugfs is
    readable, the MES version the GPU runs is judged too (``mes_row``).

    >>> [r.verdict for r in firmware_rows("fedora", {"amd-gpu-firmware": "20251111-1.fc43"}, None, Settings())]
    ['ok', 'info']
    """
    shown = ", ".join(f"{n} {v}" for n, v in sorted(packages.items())) or "no firmware package"
    remedy = FIRMWARE_REMEDY.get(distro, "update the linux-firmware package")
    date_checked = distro == "fedora"
    if date_checked:
        dates = [d for d in (firmware_date(v) for v in packages.values()) if d]
        bad = sorted({d for d in dates if d in s.firmware_bad_snapshots})
        if not dates:
            package = Row("firmware", shown, "FAIL", f"no linux-firmware / amd-gpu-firmware package: {remedy}")
        elif bad:
            package = Row("firmware", shown, "FAIL",
                          f"snapshot {', '.join(map(str, bad))} is known bad (firmware_bad_snapshots): 20251125 "
                          f"ships MES 0x{MES_BAD:x}, which hangs gfx1151; {remedy} to a later snapshot, or roll "
                          "back to 20251111 as AMD engineers advise (dnf downgrade linux-firmware amd-gpu-firmware)")
        else:
            package = Row("firmware", f"{shown} (not a known-bad snapshot)")
    else:
        package = Row("firmware", shown, "info",
                      "package date not compared: Debian and Ubuntu backport fixes into old snapshot dates")
    return [package, mes_row(mes, remedy, date_checked)]


def mes_row(mes: list[dict] | None, remedy: str, date_checked: bool) -> Row:
    """FAIL on MES 0x83, WARN below 0x80; unreadable is a WARN where the package date was not compared either."""
    if mes is None:
        why = "debugfs not readable (/sys/kernel/debug/dri/*/amdgpu_firmware_info needs root and debugfs)"
        if date_checked:
            return Row("MES firmware", "not checked", "info", why)
        return Row("MES firmware", "not checked", "WARN",
                   f"{why}; the package date is not compared here either, so the GPU firmware is unverified: "
                   "run as root with debugfs mounted (mount -t debugfs none /sys/kernel/debug)")
    versions = sorted({m["mes"] for m in mes if m["mes"] is not None})
    shown = ", ".join(f"0x{v:x}" for v in versions) or "?"
    if MES_BAD in versions:
        return Row("MES firmware", shown, "FAIL",
                   f"MES 0x{MES_BAD:x} (linux-firmware 20251125) hangs gfx1151 under load; {remedy}")
    if versions and min(versions) < MES_GOOD:
        return Row("MES firmware", shown, "WARN", f"older than 0x{MES_GOOD:x}, the version known good; {remedy}")
    return Row("MES firmware", shown)


def act_on(rows: list[Row], failure: str) -> None:
    """Print each row for the current host (WARN rows as warnings); FAIL rows fail the host, named `failure`."""
    for row in rows:
        line = f"{row.subject} {row.verdict}: {row.value}" + (f" -> {row.why}" if row.why else "")
        if row.verdict == "WARN":
            warn(line)
        else:
            logger.info(f"{host.name}: {line}")
    failures = [r for r in rows if r.verdict == "FAIL"]
    if failures:
        fail_host(failure, "; ".join(f"{r.subject} {r.value}: {r.why}" for r in failures))
