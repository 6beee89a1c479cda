"""deploys/llama_cpp.py without hosts: build flags and identity, build deps, the build script."""

import subprocess

import pytest

from deploys.llama_cpp import BUILD_PACKAGES, build_id, build_script, cmake_flags, is_commit
from deploys.settings import Settings


def test_hip_build_targets_the_gpu_and_always_has_rpc():
    flags = cmake_flags(Settings(llama_cpp_backend="hip", gpu_targets=["gfx1151", "gfx1100"]))
    assert "-DGGML_RPC=ON" in flags and "-DGGML_HIP=ON" in flags
    assert "-DGPU_TARGETS=gfx1151;gfx1100" in flags
    assert not any("ROCWMMA" in f or "HIP_UMA" in f for f in flags), "options gone upstream must not be passed"


@pytest.mark.parametrize(("backend", "present", "absent"), [
    ("vulkan", "-DGGML_VULKAN=ON", "-DGGML_HIP=ON"),
    ("cpu", "-DGGML_RPC=ON", "-DGGML_VULKAN=ON"),
])
def test_other_backends(backend, present, absent):
    flags = cmake_flags(Settings(llama_cpp_backend=backend))
    assert present in flags and absent not in flags
    assert not any(f.startswith("-DGPU_TARGETS") for f in flags)


def test_extra_cmake_args_are_part_of_the_identity():
    plain = cmake_flags(Settings(llama_cpp_backend="hip"))
    extra = cmake_flags(Settings(llama_cpp_backend="hip", llama_cpp_cmake_extra_args=["-DGGML_HIP_NO_VMM=ON"]))
    assert extra[-1] == "-DGGML_HIP_NO_VMM=ON"
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert build_id(commit, plain) != build_id(commit, extra)
    assert build_id(commit, plain) == build_id(commit, list(plain))
    assert build_id(commit, plain).startswith("0123456789ab-")


@pytest.mark.parametrize(("family", "backend", "wanted"), [
    ("apt", "vulkan", {"libvulkan-dev", "glslc", "cmake", "git"}),
    ("dnf", "vulkan", {"vulkan-loader-devel", "glslc", "gcc-c++", "cmake"}),
    ("apt", "hip", {"cmake", "ninja-build", "g++"}),
    ("dnf", "hip", {"cmake", "ninja-build", "gcc-c++"}),
])
def test_build_packages_per_family_and_backend(family, backend, wanted):
    packages = set(BUILD_PACKAGES[(family, "cpu")] + BUILD_PACKAGES[(family, backend)])
    assert wanted <= packages
    assert not any("dkms" in p for p in packages)


def test_is_commit():
    assert is_commit("0123456789abcdef0123456789abcdef01234567")
    assert not is_commit("b10760") and not is_commit("0123456")


def test_hip_script_takes_the_compiler_from_rocm_and_is_valid_shell():
    s = Settings(llama_cpp_backend="hip", llama_cpp_ref="b10760")
    script = build_script(s, cmake_flags(s), jobs=None)
    assert 'HIPCXX="$(hipconfig -l)/clang"' in script
    assert "-DGPU_TARGETS=gfx1151" in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_script_moves_current_only_after_the_binaries_ran():
    s = Settings(llama_cpp_backend="cpu")
    script = build_script(s, cmake_flags(s), jobs=4)
    order = [script.index(step) for step in (
        "cmake --build", "bin/llama-server\" --version", "--help", 'mv "$build.tmp" "$build"',
        'mv -T "$prefix/current.new" "$prefix/current"')]
    assert order == sorted(order)
    assert "-j 4" in script and "set -eu" in script
