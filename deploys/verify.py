"""Verify Strix Halo hosts: read every fact, print one table per host, fail with explanations.

    pyinfra inventories/lab.py deploys/verify.py

Each row is one subject (GPU, GTT, VRAM carve-out, TTM limit, kernel, firmware, IOMMU, ROCm) with
the value read and a verdict. A FAIL row stops that host with its explanation and the fix; a WARN
row is printed and does not fail. Nothing is changed on the hosts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from packaging.version import Version
from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.facts.server import LinuxDistribution

from deploys.checks import Row, distro_id, firmware_rows, kernel_row
from deploys.common import fail_host
from deploys.settings import GIB, TTM_PAGES_PER_GIB, Settings, settings
from facts.amdgpu import GpuMemory, KfdGpuNodes, TtmLimits
from facts.firmware import FirmwarePackages, MesFirmware
from facts.iommu import IommuState
from facts.kernel import KernelRelease
from facts.memory import MemTotal, installed_ram_bytes
from facts.rocm import RocmVersion

PAGE = 4096
# Without working ttm arguments (or on a kernel older than 6.16.9) GTT is about half of RAM,
# capped near 15.5 GiB on the older kernels; anything this far below the wanted size is that case.
GTT_STOCK_FRACTION = 0.6
IOMMU_WANTED = {"off": "off", "pt": "passthrough"}


@dataclass
class HostFacts:
    """Everything verify reads from one host (each fact read once)."""

    distro: str  # lower-case ID: debian, ubuntu, fedora, ...
    kernel: dict | None
    gpu_memory: list[dict]
    ttm: dict | None
    kfd_nodes: list[dict]
    iommu: dict
    firmware: dict[str, str]
    mes: list[dict] | None
    rocm: str | None
    mem_total: int | None


@dataclass
class Report:
    host: str
    rows: list[Row] = field(default_factory=list)

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "FAIL"]

    def add(self, subject: str, value: str, verdict: str = "ok", why: str = "") -> None:
        self.rows.append(Row(subject, value, verdict, why))

    def table(self) -> str:
        width = max(len(r.subject) for r in self.rows)
        lines = [f"{self.host}: {'PASS' if not self.failures else 'FAIL'}"]
        for r in self.rows:
            lines.append(f"  {r.subject:<{width}}  {r.verdict:<4}  {r.value}")
            if r.why:
                lines.append(f"  {'':<{width}}        -> {r.why}")
        return "\n".join(lines)


def gib(value: int | None) -> str:
    return "?" if value is None else f"{value / GIB:.2f} GiB"


def read_facts() -> HostFacts:
    """Read every fact verify needs from the current host, once each."""
    return HostFacts(
        distro=distro_id(host.get_fact(LinuxDistribution)),
        kernel=host.get_fact(KernelRelease),
        gpu_memory=host.get_fact(GpuMemory),
        ttm=host.get_fact(TtmLimits),
        kfd_nodes=host.get_fact(KfdGpuNodes),
        iommu=host.get_fact(IommuState),
        firmware=host.get_fact(FirmwarePackages),
        mes=host.get_fact(MesFirmware),
        rocm=host.get_fact(RocmVersion),
        mem_total=host.get_fact(MemTotal),
    )


def judge(facts: HostFacts, s: Settings) -> Report:
    """Compare what a host shows with what its settings want; pure, so tests feed it facts."""
    report = Report(s.host_name)
    report.rows.append(kernel_row(facts.distro, facts.kernel, s))
    card = check_gpu(report, facts, s)
    if card is not None:
        check_memory(report, facts, s, card)
    report.rows.extend(firmware_rows(facts.distro, facts.firmware, facts.mes, s))
    check_iommu(report, facts, s)
    report.add("ROCm", facts.rocm or "not installed", "info")
    return report


def check_gpu(report: Report, facts: HostFacts, s: Settings) -> dict | None:
    """The amdgpu card and its KFD node; returns the card whose memory the other rows judge."""
    if not facts.gpu_memory:
        report.add("GPU", "no amdgpu card", "FAIL",
                   "no card in /sys/class/drm is driven by amdgpu: is amdgpu loaded (lsmod | grep amdgpu)?")
        return None
    targets = [n["gfx_target"] for n in facts.kfd_nodes]
    cards = ", ".join(c["card"] for c in facts.gpu_memory)
    if not targets:
        report.add("GPU", f"{cards}; no KFD GPU node", "FAIL",
                   "ROCm cannot see the GPU: /sys/class/kfd has no GPU node (amdgpu without KFD/HSA support?)")
    elif not set(targets) & set(s.gpu_targets):
        report.add("GPU", f"{cards}; {', '.join(targets)}", "FAIL",
                   f"gpu_targets is {s.gpu_targets}: builds for it would not run on this GPU; "
                   f"set gpu_targets to {targets}")
    else:
        simds = sum(n["simd_count"] or 0 for n in facts.kfd_nodes)
        report.add("GPU", f"{cards}; {', '.join(targets)} ({simds} SIMDs)")
    return facts.gpu_memory[0]


def check_memory(report: Report, facts: HostFacts, s: Settings, card: dict) -> None:
    vram, gtt = card["vram_total"], card["gtt_total"]
    carve_max = s.vram_carveout_max_gib * GIB
    if vram is None:
        report.add("VRAM carve-out", "?", "FAIL", f"{card['card']}: mem_info_vram_total is unreadable")
    elif vram > carve_max:
        report.add("VRAM carve-out", gib(vram), "FAIL",
                   f"above vram_carveout_max_gib {s.vram_carveout_max_gib}: the carve-out is taken from the "
                   "OS; lower the BIOS UMA frame buffer setting (\"iGPU memory size\") to 512 MiB or Auto, "
                   "the GPU gets the memory through GTT instead")
    else:
        report.add("VRAM carve-out", gib(vram))

    if facts.mem_total is None:
        report.add("GTT", gib(gtt), "FAIL", "cannot read MemTotal from /proc/meminfo to size ttm_gib")
        return
    installed = installed_ram_bytes(facts.mem_total, vram or 0)
    wanted_gib = s.wanted_ttm_gib(installed)
    wanted = wanted_gib * GIB
    source = "ttm_gib" if s.ttm_gib is not None else f"{installed // GIB} GiB RAM - os_reserve_gib"
    shown = f"{gib(gtt)} (wanted {wanted_gib} GiB: {source})"
    if gtt is None:
        report.add("GTT", shown, "FAIL", f"{card['card']}: mem_info_gtt_total is unreadable")
    elif abs(gtt - wanted) <= PAGE:
        report.add("GTT", shown)
    elif gtt < wanted * GTT_STOCK_FRACTION:
        report.add("GTT", shown, "FAIL",
                   f"far below the wanted size: the kernel is too old (< {s.kernel_min_version}) or the ttm "
                   "kernel arguments are not active yet (reboot pending after deploys/grub.py?)")
    else:
        report.add("GTT", shown, "FAIL",
                   "differs from the wanted size: the running kernel was booted with other ttm arguments; "
                   "run deploys/grub.py and reboot")

    pages = (facts.ttm or {}).get("pages_limit")
    module = (facts.ttm or {}).get("module", "ttm")
    wanted_pages = wanted_gib * TTM_PAGES_PER_GIB
    if pages == wanted_pages:
        report.add("TTM pages_limit", f"{pages} ({module})")
    elif facts.ttm is None:
        report.add("TTM pages_limit", "no ttm module", "FAIL", "/sys/module/ttm is missing: amdgpu is not loaded")
    else:
        report.add("TTM pages_limit", f"{pages} ({module})", "FAIL",
                   f"wanted {wanted_pages} ({wanted_gib} GiB x {TTM_PAGES_PER_GIB}); run deploys/grub.py and "
                   "reboot")


def check_iommu(report: Report, facts: HostFacts, s: Settings) -> None:
    mode = facts.iommu["mode"]
    wanted = IOMMU_WANTED.get(s.iommu_mode)
    shown = f"{mode} ({facts.iommu['groups']} groups)"
    if wanted is None or mode == wanted:
        report.add("IOMMU", shown)
    else:
        report.add("IOMMU", shown, "FAIL",
                   f"iommu_mode {s.iommu_mode!r} wants {wanted}; run deploys/grub.py and reboot")


@deploy("Verify Strix Halo host")
def verify_host() -> None:
    s = settings(host)
    report = judge(read_facts(), s)
    logger.info(report.table())
    if report.failures:
        fail_host("Fail: the host does not pass verification",
                  "; ".join(f"{r.subject} {r.value}: {r.why}" for r in report.failures))


if __name__ in ("builtins", "__main__"):
    verify_host()
