"""Host state every Strix Halo host needs: kernel, firmware package, GPU groups, kernel arguments, IOMMU."""

from __future__ import annotations

import pytest
from pyinfra.facts.server import Users

from deploys import grub
from deploys.groups import GPU_GROUPS, missing_memberships
from facts.kernel import KernelCmdline
from tests.verify.halo import assert_row, check


def test_kernel_release_is_at_least_kernel_min_version(halo):
    assert_row(halo, "kernel")


def test_firmware_package_is_new_enough(halo):
    assert_row(halo, "firmware")


def test_amdgpu_card_for_the_backend(halo):
    if halo.settings.llama_cpp_backend == "cpu":
        pytest.skip(f"{halo.name}: llama_cpp_backend is 'cpu', no GPU needed")
    assert_row(halo, "GPU", accept=("ok",))


def test_gpu_users_are_in_render_and_video(halo):
    users = halo.settings.gpu_users
    if not users:
        pytest.skip(f"{halo.name}: gpu_users is empty")
    absent, lacking = missing_memberships(halo.fact(Users), users)
    check(not absent, f"{halo.name}: gpu_users {', '.join(absent)} do not exist: create them, run deploys/groups.py")
    check(not lacking, (f"{halo.name}: not in {' and '.join(GPU_GROUPS)}: "
                         + "; ".join(f"{u} lacks {', '.join(g)}" for u, g in lacking.items())
                         + ": run deploys/groups.py (the user logs in again afterwards)"))


def test_kernel_cmdline_has_our_arguments(halo):
    if halo.facts.mem_total is None:
        pytest.fail(f"{halo.name}: cannot read MemTotal from /proc/meminfo to size the ttm arguments", pytrace=False)
    wanted, remove = grub.kernel_args(halo.settings, halo.facts.mem_total, halo.facts.gpu_memory, halo.facts.ttm)
    to_set, to_remove = grub.args_to_change(halo.fact(KernelCmdline), wanted, remove)
    check(not to_set and not to_remove,
          f"{halo.name}: /proc/cmdline {grub.describe(to_set, to_remove)}: run deploys/grub.py and reboot "
          "(or deploy with reboot_allowed = True)")


def test_iommu_is_iommu_mode(halo):
    assert_row(halo, "IOMMU")
