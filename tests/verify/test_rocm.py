"""ROCm, where llama.cpp's HIP backend needs it."""

from __future__ import annotations

import pytest

from tests.verify.halo import assert_row


def test_rocm_is_installed_in_the_wanted_version(halo):
    if halo.settings.llama_cpp_backend != "hip":
        pytest.skip(f"{halo.name}: llama_cpp_backend is {halo.settings.llama_cpp_backend!r}, ROCm is not needed")
    assert_row(halo, "ROCm", accept=("ok",))
