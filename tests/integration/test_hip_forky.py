"""The HIP backend compiled for gfx1151 for real, on a Debian testing "forky" lab host (slow: the HIP
compile takes tens of minutes on a small machine; run it with `pytest -m slow tests/integration/test_hip_forky.py`).

forky's own archive has a HIP new enough for llama.cpp's ggml-hip (hipcc 7.0.2, HIP 6.4.3, rocBLAS and
hipBLAS 6.4.4 in 2026-11). deploys/rocm.py installs them (rocm_source = "distro"), then deploys/llama_cpp.py
builds llama.cpp with -DGGML_HIP=ON -DGPU_TARGETS=gfx1151 through the pyinfra CLI, as users run it. There
is no GPU here: the proof is the compile, the gfx1151 code objects in the binaries, and that they start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from lab.pyinfra_cli import ENV, REPO, pyinfra
from tests.integration.conftest import assert_no_changes
from lab import lab
from lab.llama_source import TAG, llama_repo, serve

pytestmark = pytest.mark.slow

HOST = "halo1"
PREFIX = "/opt/llama.cpp"
BUILD_TIMEOUT_S = 4 * 3600  # two shared cores: the HIP compile has taken over an hour
THERE = "/opt/rocm-7.2.1"  # a TheRock-shaped prefix made from forky's own ROCm files (last test)


def on(command: str, timeout: float = 120) -> str:
    return lab.ssh(HOST, command, timeout=timeout).stdout


@pytest.fixture(scope="module")
def forky(lab_session):
    """One booted forky lab host, the llama.cpp source served on the lab bridge; yields the --data."""
    lab.ensure(lab.parse_host_args([f"{HOST}:forky"]))
    repo = llama_repo()
    server, port = serve(repo.parent, f"{lab.SUBNET}.1")
    try:
        yield {"llama_cpp_repo": f"http://{lab.SUBNET}.1:{port}/{repo.name}", "llama_cpp_ref": TAG,
               "llama_cpp_backend": "hip", "rocm_source": "distro"}
    finally:
        server.shutdown()
        server.server_close()


def run(deploy: str, data: dict, timeout: float = 1800) -> tuple[float, object]:
    start = time.monotonic()
    proc = pyinfra(str(lab.STATE / "inventory.py"), deploy, data=data, timeout=timeout)
    return time.monotonic() - start, proc


def test_forky_is_debian_testing_with_a_hip_llama_cpp_accepts(forky):
    assert "VERSION_CODENAME=forky" in on("cat /etc/os-release")
    assert "VERSION_ID" not in on("cat /etc/os-release")  # testing: deploys/rocm.py goes by the codename


def test_rocm_from_forkys_archive_installs_once(forky):
    seconds, proc = run("deploys/rocm.py", forky)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"deploys/rocm.py on forky: {seconds:.0f} s")
    version = on("hipconfig --version")
    assert not version.startswith(("5.", "6.0")), version
    assert_no_changes(run("deploys/rocm.py", forky)[1])


def test_llama_cpp_builds_for_gfx1151_with_hip(forky):
    seconds, proc = run("deploys/llama_cpp.py", forky, timeout=BUILD_TIMEOUT_S)
    output = proc.stdout + proc.stderr
    print(f"deploys/llama_cpp.py (HIP, gfx1151) on forky: {seconds:.0f} s, exit {proc.returncode}")
    assert proc.returncode == 0, output[-6000:]
    stamp = json.loads(on(f"cat {PREFIX}/current/halo-build.json"))
    assert stamp["backend"] == "hip"
    assert {"-DGGML_HIP=ON", "-DGPU_TARGETS=gfx1151", "-DGGML_RPC=ON", "-DGGML_RPC_RDMA=OFF"} <= set(stamp["flags"])
    for binary in (stamp["server"], stamp["rpc_server"]):
        assert "libamdhip64" in on(f"ldd {binary}"), binary  # linked against HIP's runtime
        # the gfx1151 device code is bundled in the binary (clang's offload bundle id)
        assert int(on(f"grep -c -a amdgcn-amd-amdhsa--gfx1151 {binary} || true") or 0) > 0, binary
    assert on(f"{stamp['server']} --version 2>&1").count("version:") == 1
    assert "--rpc" in on(f"{stamp['server']} --help 2>&1")
    assert "-H" in on(f"{stamp['rpc_server']} --help 2>&1")
    assert_no_changes(run("deploys/llama_cpp.py", forky)[1])


def test_the_toolchain_is_found_off_path_in_a_therock_shaped_prefix(forky):
    """What this proves: with rocm_source = "therock" the build finds hipconfig in /opt/rocm-<version>/bin
    and clang through `hipconfig -l` although neither is on PATH (forky's /usr/bin/hipconfig and hipcc are
    moved away for the test), sets ROCM_PATH/HIP_PATH/HIPCXX from that prefix, CMake configures the HIP
    backend with that clang, and it compiles ggml-cuda's sources for gfx1151 from there. The build is then
    stopped after its first HIP objects (the whole HIP compile, an hour here, is proven by the test
    above with /usr), and `current` is still the build of the test above. What it does not prove: the
    prefix is made of forky's own ROCm (hipconfig copied into bin/; include/, lib/ and amdgcn/ linked to forky's,
    so that hipconfig's `-l` answers <prefix>/lib/llvm-21/bin as TheRock's answers <prefix>/lib/llvm/bin),
    not a TheRock tarball, whose own files are not exercised here."""
    before = on(f"readlink {PREFIX}/current || true").strip()
    llvm = on("hipconfig -l").strip().removesuffix("/").removesuffix("/bin")
    # AMD's layout: the device libraries in <prefix>/amdgcn/bitcode, where clang looks with ROCM_PATH set
    bitcode = on(f"find {llvm}/lib/clang -maxdepth 3 -type d -name amdgcn | head -n 1").strip()
    on(f"set -e; rm -rf {THERE}; mkdir -p {THERE}/bin; cp -L /usr/bin/hipconfig /usr/bin/hipcc {THERE}/bin/; "
       f"ln -s /usr/include {THERE}/include; ln -s /usr/lib {THERE}/lib; ln -s /usr/share {THERE}/share; "
       f"ln -s {bitcode} {THERE}/amdgcn; "
       "mv /usr/bin/hipconfig /usr/bin/hipconfig.halo-test; mv /usr/bin/hipcc /usr/bin/hipcc.halo-test")
    data = {**forky, "rocm_source": "therock", "rocm_version": "7.2.1",
            "rocm_tarball_url": "https://example.org/therock.tar.gz", "rocm_tarball_sha256": "ab" * 32,
            # a new build tree, compiled for real: without ccache, which would answer from the test above
            "llama_cpp_cmake_extra_args": '["-DHALO_TEST_PROOF=therock", "-DGGML_CCACHE=OFF"]'}
    cmd = [sys.executable, "-m", "pyinfra", "-y"] + [f"--data={k}={v}" for k, v in data.items()]
    deploy = None
    try:
        assert on("command -v hipconfig hipcc || true").strip() == ""
        deploy = subprocess.Popen(cmd + [str(lab.STATE / "inventory.py"), "deploys/llama_cpp.py"], cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=dict(os.environ, **ENV))
        start, objects, tree = time.monotonic(), [], ""
        while len(objects) < 4:
            assert deploy.poll() is None, f"the build ended before compiling HIP objects:\n{deploy.stdout.read()[-6000:]}"
            assert time.monotonic() - start < 3600, "no HIP object compiled within an hour"
            time.sleep(20)
            tree = on(f"grep -l -s HALO_TEST_PROOF {PREFIX}/trees/*/CMakeCache.txt | head -n 1").strip()
            if tree:
                objects = on(f"find {tree.rsplit('/', 1)[0]}/ggml/src/ggml-hip -name '*.cu.o' -size +1k").split()
        print(f"therock-shaped prefix: configured and {len(objects)} HIP objects compiled in "
              f"{time.monotonic() - start:.0f} s")
        compiler = next(line.split("=", 1)[1] for line in on(f"cat {tree}").splitlines()
                        if line.startswith("CMAKE_HIP_COMPILER:"))
        print(f"therock-shaped prefix: CMAKE_HIP_COMPILER={compiler}")
        assert compiler.startswith(f"{THERE}/lib/llvm-"), compiler  # clang found through the prefix's hipconfig
        # device code for gfx1151 in what it compiled (not every object has kernels: sum.cu.o has none)
        bundled = [o for o in objects if int(on(f"grep -c -a amdgcn-amd-amdhsa--gfx1151 {o} || true") or 0) > 0]
        assert bundled, objects
    finally:
        if deploy is not None:
            deploy.kill()
            deploy.wait()
        # the patterns' [/] keep pkill from matching this very command line
        on(f"pkill -f '[/]llama-build.sh|[-]DHALO_TEST_PROOF' || true; pkill -f '[/]{PREFIX[1:]}/trees/' || true; "
           "sleep 2; "
           f"mv /usr/bin/hipconfig.halo-test /usr/bin/hipconfig; mv /usr/bin/hipcc.halo-test /usr/bin/hipcc; "
           f"rm -rf {THERE}")
    assert on(f"readlink {PREFIX}/current || true").strip() == before  # the stopped build changed nothing served
