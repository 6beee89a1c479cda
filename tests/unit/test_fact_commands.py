"""Run every fact's real command with /bin/sh (dash on Debian).

On this machine (no AMD GPU) each command must exit 0 and process to the
default / no-GPU shape. The sysfs facts are also run against a fake tree
(``/sys/`` and ``/opt/`` rewritten to a temp dir) to check the shell logic.
"""

import platform
import subprocess
from pathlib import Path

import pytest

from facts.amdgpu import GpuMemory, KfdGpuNodes, TtmLimits
from facts.firmware import FirmwarePackages, MesFirmware
from facts.iommu import IommuState
from facts.kernel import KernelCmdline, KernelRelease, parse_cmdline
from facts.rocm import RocmVersion

pytestmark = pytest.mark.skipif(not Path("/bin/sh").exists(), reason="needs /bin/sh")


def run_fact(fact_cls, root: Path | None = None):
    command = fact_cls().command()
    if root is not None:
        command = command.replace("/sys/", f"{root}/sys/").replace("/opt/", f"{root}/opt/")
    proc = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    return fact_cls().process(lines) if lines else fact_cls.default()


def host_has(path: str) -> bool:
    return any(Path("/").glob(path.lstrip("/")))


# -- real commands on this host ------------------------------------------------


@pytest.mark.skipif(host_has("/sys/class/drm/card*/device/mem_info_*"), reason="has amdgpu")
def test_gpu_memory_no_gpu():
    assert run_fact(GpuMemory) == []


@pytest.mark.skipif(host_has("/sys/class/kfd"), reason="host has KFD")
def test_kfd_nodes_no_gpu():
    assert run_fact(KfdGpuNodes) == []


def test_ttm_limits():
    result = run_fact(TtmLimits)
    if not host_has("/sys/module/*ttm/parameters"):
        assert result is None
    else:
        assert result["module"] in ("ttm", "amdttm")


@pytest.mark.skipif(host_has("/sys/kernel/debug/dri/*/amdgpu_*"), reason="has amdgpu")
def test_mes_firmware_not_readable():
    assert run_fact(MesFirmware) is None


def test_iommu_state():
    result = run_fact(IommuState)
    assert result["mode"] in ("off", "passthrough", "translated")
    if not host_has("/sys/kernel/iommu_groups/*"):
        assert result == IommuState.default()


def test_kernel_release():
    result = run_fact(KernelRelease)
    assert result["release"] == platform.release()
    assert result["version"] is not None


def test_kernel_cmdline():
    assert run_fact(KernelCmdline) == parse_cmdline(Path("/proc/cmdline").read_text())


def test_firmware_packages():
    result = run_fact(FirmwarePackages)
    assert isinstance(result, dict)
    assert all(isinstance(v, str) for v in result.values())


def test_rocm_version():
    result = run_fact(RocmVersion)
    assert result is None or result[0].isdigit()


# -- fake sysfs / opt trees ------------------------------------------------------


def write(path: Path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_gpu_memory_fake_tree(tmp_path):
    drm = tmp_path / "sys/class/drm"
    write(drm / "card0/device/uevent", "DRIVER=i915\nPCI_CLASS=30000\n")
    write(drm / "card0/device/mem_info_vram_total", "0\n")
    write(drm / "card1/device/uevent", "DRIVER=amdgpu\nPCI_CLASS=38000\n")
    for name, value in [("vram_total", 536870912), ("vram_used", 1), ("gtt_total", 128849018880)]:
        write(drm / f"card1/device/mem_info_{name}", f"{value}\n")
    write(drm / "card1-DP-1/device/uevent", "DRIVER=amdgpu\n")  # connector
    (drm / "card2").mkdir()  # no uevent
    (drm / "renderD128").mkdir()
    assert run_fact(GpuMemory, tmp_path) == [
        {
            "card": "card1",
            "vram_total": 536870912,
            "vram_used": 1,
            "gtt_total": 128849018880,
            "gtt_used": None,
        }
    ]


def test_ttm_limits_fake_tree(tmp_path):
    write(tmp_path / "sys/module/ttm/parameters/pages_limit", "16373915\n")
    write(tmp_path / "sys/module/ttm/parameters/page_pool_size", "16373915\n")
    expected = {"module": "ttm", "pages_limit": 16373915, "page_pool_size": 16373915}
    assert run_fact(TtmLimits, tmp_path) == expected
    write(tmp_path / "sys/module/amdttm/parameters/pages_limit", "31457280\n")
    expected = {"module": "amdttm", "pages_limit": 31457280, "page_pool_size": None}
    assert run_fact(TtmLimits, tmp_path) == expected


def test_kfd_nodes_fake_tree(tmp_path):
    nodes = tmp_path / "sys/class/kfd/kfd/topology/nodes"
    write(nodes / "0/properties", "cpu_cores_count 32\nsimd_count 0\ngfx_target_version 0\n")
    write(nodes / "0/mem_banks/0/properties", "heap_type 0\nsize_in_bytes 133143212032\n")
    write(nodes / "1/properties", "simd_count 80\ngfx_target_version 110501")  # no final newline
    write(nodes / "1/mem_banks/0/properties", "heap_type 1\nsize_in_bytes 128849018880\n")
    write(nodes / "2/properties", "simd_count 192\ngfx_target_version 110000\n")
    result = run_fact(KfdGpuNodes, tmp_path)
    assert [(n["node"], n["gfx_target"], n["simd_count"]) for n in result] == [
        (1, "gfx1151", 80),
        (2, "gfx1100", 192),
    ]
    assert [n["mem_bank_bytes"] for n in result] == [128849018880, None]


def test_iommu_fake_tree(tmp_path):
    groups = tmp_path / "sys/kernel/iommu_groups"
    for n in range(3):
        write(groups / f"{n}/type", "DMA-FQ\n")
    (groups / "3").mkdir()
    expected = {"mode": "translated", "groups": 4, "types": ["DMA-FQ", "unknown"]}
    assert run_fact(IommuState, tmp_path) == expected


def test_mes_firmware_fake_tree(tmp_path):
    dri = tmp_path / "sys/kernel/debug/dri"
    info = (
        "MES_KIQ feature version: 6, firmware version: 0x0000006c\n"
        "MES feature version: 1, firmware version: 0x00000080\n"
    )
    write(dri / "0000:c5:00.0/amdgpu_firmware_info", info)
    (dri / "1").symlink_to("0000:c5:00.0")  # newer kernels: minors link to the device dir
    (dri / "128").symlink_to("0000:c5:00.0")
    write(dri / "2/amdgpu_firmware_info", info.replace("0x00000080", "0x00000083"))
    (dri / "3").mkdir()
    assert run_fact(MesFirmware, tmp_path) == [
        {"dri": "0000:c5:00.0", "mes": 128, "mes_kiq": 108},
        {"dri": "2", "mes": 131, "mes_kiq": 108},
    ]


def test_rocm_version_fake_tree(tmp_path):
    write(tmp_path / "opt/rocm-7.9.0/.info/version", "7.9.0-9\n")
    write(tmp_path / "opt/rocm-7.10.0/.info/version", "7.10.0-20\n")
    assert run_fact(RocmVersion, tmp_path) == "7.10.0"
    write(tmp_path / "opt/rocm/.info/version", "7.1.1-38\n")
    assert run_fact(RocmVersion, tmp_path) == "7.1.1"
