"""A fake Strix Halo GPU for lab hosts: the sysfs files the kernel would expose, and nothing else.

The defaults are a tuned Strix Halo (Radeon 8060S, gfx1151) with 128 GiB of RAM: GTT 120 GiB,
a 512 MiB VRAM carve-out, ttm.pages_limit 31457280, IOMMU off, MES firmware 0x80.

    profile = GpuProfile(gtt_total=16642998272)      # an old kernel: GTT about 15.5 GiB
    write_fake_sysfs(host_root, profile)             # under <root>/var/lib/halo-lab/sysfs
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from facts.memory import GIB

FAKE_DIR = "var/lib/halo-lab/sysfs"
MEMINFO = "var/lib/halo-lab/proc/meminfo"
CMDLINE = "var/lib/halo-lab/proc/cmdline"
KERNEL_RESERVED_KIB = 1_310_720  # what the firmware and kernel keep before MemTotal (1.25 GiB)
# Laid over /sys/<entry> inside the host by fake-sysfs.sh. Every entry is always mounted (empty when
# the profile has no GPU) so that values can change while the host runs.
MOUNTS = ("class/drm", "class/kfd", "module/ttm", "module/amdttm", "kernel/iommu_groups", "kernel/debug")


@dataclass
class GpuProfile:
    """The values a test chooses for one host's fake GPU (bytes, 4 KiB pages, firmware numbers)."""

    present: bool = True
    ram_gib: int = 128  # installed RAM; /proc/meminfo shows it less the carve-out and kernel reserve
    vram_total: int = 512 << 20
    vram_used: int = 92 << 20
    gtt_total: int = 120 * GIB
    gtt_used: int = 57 << 20
    ttm_module: str = "ttm"  # "amdttm" with AMD's DKMS driver
    pages_limit: int = 120 * 262144
    page_pool_size: int = 120 * 262144
    gfx_target_version: int = 110501
    simd_count: int = 80
    iommu: str = "off"  # off | passthrough | translated
    iommu_groups: int = 4
    mes_version: int | None = 0x80  # None: debugfs not readable
    cmdline: str | None = None  # what /proc/cmdline shows; None: this machine's own (no arguments of ours)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def meminfo_text(gpu: GpuProfile) -> str:
    """/proc/meminfo as the kernel writes it on a box with gpu.ram_gib of RAM."""
    carve_out_kib = gpu.vram_total // 1024 if gpu.present else 0
    total = gpu.ram_gib * 1024 * 1024 - carve_out_kib - KERNEL_RESERVED_KIB
    rows = [("MemTotal", total), ("MemFree", total * 9 // 10), ("MemAvailable", total * 19 // 20),
            ("Buffers", 2048), ("Cached", total // 50), ("SwapCached", 0), ("SwapTotal", 0), ("SwapFree", 0)]
    return "".join(f"{key + ':':<16}{value:>8} kB\n" for key, value in rows)


def write_fake_sysfs(root: Path, gpu: GpuProfile) -> None:
    """(Re)write the fake files of one host below its root; safe while the host runs."""
    fake = root / FAKE_DIR
    for entry in MOUNTS:  # empty the mounted directories in place: bind mounts keep their inode
        top = fake / entry
        top.mkdir(parents=True, exist_ok=True)
        for child in top.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    _write(fake / "MOUNTS", "\n".join(MOUNTS) + "\n")
    _write(root / MEMINFO, meminfo_text(gpu))
    _write(root / CMDLINE, (gpu.cmdline + "\n") if gpu.cmdline is not None else Path("/proc/cmdline").read_text())
    # The host's CPU is always a KFD node 0 with no SIMDs; the GPU is node 1.
    kfd_nodes = fake / "class/kfd/kfd/topology/nodes"
    _write(kfd_nodes / "0/properties", "cpu_cores_count 32\nsimd_count 0\ngfx_target_version 0\n")
    if not gpu.present:
        return
    device = fake / "class/drm/card1/device"
    _write(device / "uevent", "DRIVER=amdgpu\nPCI_CLASS=38000\nPCI_ID=1002:1586\n")
    for name in ("vram_total", "vram_used", "gtt_total", "gtt_used"):
        _write(device / f"mem_info_{name}", f"{getattr(gpu, name)}\n")
    _write(fake / "class/drm/card1/dev", "226:1\n")
    params = fake / "module" / gpu.ttm_module / "parameters"
    _write(params / "pages_limit", f"{gpu.pages_limit}\n")
    _write(params / "page_pool_size", f"{gpu.page_pool_size}\n")
    _write(
        kfd_nodes / "1/properties",
        f"cpu_cores_count 0\nsimd_count {gpu.simd_count}\nmax_waves_per_simd 16\n"
        f"gfx_target_version {gpu.gfx_target_version}\nvendor_id 4098\ndevice_id 5510\n",
    )
    _write(kfd_nodes / "1/mem_banks/0/properties", f"heap_type 1\nsize_in_bytes {gpu.gtt_total}\n")
    if gpu.iommu != "off":
        kind = "identity" if gpu.iommu == "passthrough" else "DMA-FQ"
        for group in range(gpu.iommu_groups):
            _write(fake / f"kernel/iommu_groups/{group}/type", kind + "\n")
    if gpu.mes_version is not None:
        _write(
            fake / "kernel/debug/dri/1/amdgpu_firmware_info",
            "VCE feature version: 0, firmware version: 0x00000000\n"
            "MES_KIQ feature version: 6, firmware version: 0x0000006c\n"
            f"MES feature version: 1, firmware version: 0x{gpu.mes_version:08x}\n"
            "SMC feature version: 0, program: 0, firmware version: 0x00646c00 (100.108.0)\n",
        )
