"""deploys/verify.py through the pyinfra CLI over SSH against the lab's fake Strix Halo hosts."""

import re
from pathlib import Path

from facts.memory import GIB
from lab import lab
from lab.gpu import KERNEL_RESERVED_KIB, GpuProfile
from lab.pyinfra_cli import pyinfra, pyinfra_facts


def test_facts_read_the_fake_values(lab_inventory):
    facts = pyinfra_facts(
        lab_inventory, "facts.amdgpu.GpuMemory", "facts.amdgpu.TtmLimits", "facts.amdgpu.KfdGpuNodes",
        "facts.iommu.IommuState", "facts.firmware.MesFirmware", "facts.memory.MemTotal",
    )
    gpu = GpuProfile()
    for name in ("halo1", "halo2", "halo3"):
        card = facts["facts.amdgpu.GpuMemory"][name]
        assert card == [{"card": "card1", "vram_total": gpu.vram_total, "vram_used": gpu.vram_used,
                         "gtt_total": gpu.gtt_total, "gtt_used": gpu.gtt_used}]
        assert facts["facts.amdgpu.TtmLimits"][name] == {
            "module": "ttm", "pages_limit": gpu.pages_limit, "page_pool_size": gpu.page_pool_size}
        assert facts["facts.amdgpu.KfdGpuNodes"][name] == [{
            "node": 1, "gfx_target_version": 110501, "gfx_target": "gfx1151", "simd_count": 80,
            "mem_bank_bytes": gpu.gtt_total}]
        assert facts["facts.iommu.IommuState"][name] == {"mode": "off", "groups": 0, "types": []}
        assert facts["facts.firmware.MesFirmware"][name] == [{"dri": "1", "mes": 0x80, "mes_kiq": 0x6C}]
        assert facts["facts.memory.MemTotal"][name] == gpu.ram_gib * GIB - gpu.vram_total - KERNEL_RESERVED_KIB * 1024


def test_verify_passes_on_a_tuned_cluster_and_changes_nothing(lab_inventory):
    proc = pyinfra(lab_inventory, "deploys/verify.py")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    for name in ("halo1", "halo2", "halo3"):
        assert f"{name}: PASS" in output
    assert re.search(r"GTT\s+ok\s+120\.00 GiB \(wanted 120 GiB", output)
    assert re.search(r"GPU\s+ok\s+card1; gfx1151", output)
    assert "Error" not in output.split("--> Results:")[1].split("Grand total")[1]


def test_verify_explains_an_old_kernel_gtt_and_a_big_carve_out(lab_inventory, set_gpu):
    set_gpu("halo2", GpuProfile(gtt_total=16642998272, pages_limit=4063232))
    set_gpu("halo3", GpuProfile(vram_total=96 * GIB, gtt_total=120 * GIB))
    proc = pyinfra(lab_inventory, "deploys/verify.py")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "halo1: PASS" in output
    assert "halo2: FAIL" in output and "halo3: FAIL" in output
    assert re.search(r"GTT\s+FAIL\s+15\.50 GiB \(wanted 120 GiB", output)
    assert "kernel is too old" in output and "reboot pending" in output
    assert re.search(r"VRAM carve-out\s+FAIL\s+96\.00 GiB", output)
    assert "BIOS UMA" in output


def test_bad_inventory_value_stops_the_run_before_any_operation(lab_hosts, tmp_path: Path):
    inventory = tmp_path / "inventory.py"
    text = (lab.STATE / "inventory.py").read_text()
    halo2 = f"'rpc_bind_address': '{lab.SUBNET}.12'"
    assert halo2 in text
    inventory.write_text(text.replace(halo2, halo2 + ", 'ttm_gib': 'lots'"))
    proc = pyinfra(str(inventory), "deploys/verify.py")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "halo2: ttm_gib = 'lots' is invalid" in output
    assert "Fix it in" in output
    assert "Beginning operation run" not in output
