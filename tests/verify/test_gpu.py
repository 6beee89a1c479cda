"""The unified memory and the GPU as the kernel shows them (skipped on hosts without an amdgpu card)."""

from __future__ import annotations

import pytest

from tests.verify.halo import assert_row

pytestmark = pytest.mark.gpu


def test_gtt_is_ttm_gib(halo):
    assert_row(halo, "GTT")


def test_ttm_pages_limit_is_the_wanted_value(halo):
    assert_row(halo, "TTM pages_limit")


def test_vram_carveout_is_not_above_the_warning_line(halo):
    assert_row(halo, "VRAM carve-out")


def test_gfx_target_is_in_the_kfd_topology(halo):
    assert_row(halo, "GPU", accept=("ok",))


def test_mes_firmware_is_not_the_bad_one(halo):
    assert_row(halo, "MES firmware")
