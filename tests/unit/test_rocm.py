"""Unit tests of deploys/rocm.py: the package table, the apt files, the tarball script and the settings."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import pytest
from pyinfra.api import Inventory

from deploys.rocm import (
    AMD_SUITES,
    LD_CONF,
    ROCM_PACKAGES,
    STAMP,
    Unsupported,
    apt_pin,
    deb822_source,
    install_rocm,
    ld_conf,
    opt_dir,
    rocm_packages,
    rocm_prefix,
    tarball_script,
)
from deploys.settings import Settings, SettingsError, validate_inventory
from tests.unit.deploy_ops import Distro, deploy_ops, distro

SHA = "ab" * 32

# --- which packages, from where -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "distro", "major", "expected"),
    [
        ("distro", "fedora", 43, ["rocm-hip-devel", "hipcc", "hipblas-devel", "rocblas-devel", "rocminfo"]),
        ("distro", "debian", 14, ["hipcc", "libamdhip64-dev", "libhipblas-dev", "librocblas-dev", "rocminfo"]),
        ("amd-repo", "ubuntu", 24, ["rocm-hip-runtime", "rocm-hip-runtime-dev", "hipcc", "hipblas-dev",
                                    "rocblas-dev", "rocminfo"]),
        ("amd-repo", "debian", 12, ["rocm-hip-runtime", "rocm-hip-runtime-dev", "hipcc", "hipblas-dev",
                                    "rocblas-dev", "rocminfo"]),
        ("therock", "ubuntu", 24, []),
        ("therock", "fedora", 43, []),
    ],
)
def test_packages_per_source_and_distro(source, distro, major, expected):
    assert rocm_packages(source, distro, major) == expected


def test_every_package_set_has_compiler_blas_and_rocminfo():
    for (source, distro_name), packages in ROCM_PACKAGES.items():
        if source == "therock":
            continue
        assert any("hipcc" in p or "hip-devel" in p for p in packages), (source, distro_name)
        assert any("hipblas" in p for p in packages) and any("rocblas" in p for p in packages), (source, distro_name)
        assert "rocminfo" in packages, (source, distro_name)
        assert not any(p.startswith("amdgpu-dkms") for p in packages), (source, distro_name)


@pytest.mark.parametrize(
    ("source", "distro", "major", "words"),
    [
        ("distro", "ubuntu", 24, ["no kernels for the gfx1151", "rocm_source = 'amd-repo'"]),
        ("distro", "debian", 12, ["Debian 12's archive has no hipBLAS or rocBLAS", "'amd-repo'", "'therock'"]),
        ("distro", "debian", 13, ["Debian 13's own HIP is 5.7", "needs HIP 6.1 or newer", "'amd-repo'", "'therock'",
                                  'Debian testing "forky" (HIP 6.4.3']),
        ("distro", "arch", None, ["'therock'"]),
        ("amd-repo", "fedora", 43, ["Ubuntu 22, Ubuntu 24, Debian 12, Debian 13", "'distro' on Fedora"]),
        ("amd-repo", "ubuntu", 25, ["not ubuntu 25"]),
        ("therock", "alpine", 3, ["'therock'"]),
    ],
)
def test_unsupported_combinations_say_what_to_use(source, distro, major, words):
    with pytest.raises(Unsupported) as info:
        rocm_packages(source, distro, major)
    for word in words:
        assert word in str(info.value)


def test_amd_suites():
    assert AMD_SUITES[("ubuntu", 24)] == "noble" and AMD_SUITES[("debian", 13)] == "noble"
    assert AMD_SUITES[("ubuntu", 22)] == "jammy" and AMD_SUITES[("debian", 12)] == "jammy"


# --- apt files --------------------------------------------------------------------------------------


def test_deb822_source():
    assert deb822_source("https://repo.radeon.com/rocm/apt/", "7.1.1", "noble") == (
        "# ROCm from AMD's apt repository (written by halo-provision deploys/rocm.py)\n"
        "Types: deb\n"
        "URIs: https://repo.radeon.com/rocm/apt/7.1.1\n"
        "Suites: noble\n"
        "Components: main\n"
        "Architectures: amd64\n"
        "Signed-By: /etc/apt/keyrings/rocm.gpg\n"
    )


def test_pin_prefers_the_repository_host_and_blocks_dkms():
    assert apt_pin("http://10.151.3.1:8765/rocm/apt") == (
        "# Prefer ROCm from AMD's repository over the distribution's older packages of the same names\n"
        "Package: *\n"
        "Pin: origin 10.151.3.1\n"
        "Pin-Priority: 600\n"
        "\n"
        "# Never amdgpu-dkms or its firmware: the firmware package has shipped the MES 0x83 that hangs gfx1151\n"
        "Package: amdgpu-dkms amdgpu-dkms-firmware\n"
        "Pin: release *\n"
        "Pin-Priority: -1\n"
    )
    assert "Pin: origin repo.radeon.com\n" in apt_pin("https://repo.radeon.com/rocm/apt")


def test_opt_dir_has_three_numbers_like_amds():
    assert opt_dir("7.1.1") == "/opt/rocm-7.1.1"
    assert opt_dir("7.2") == "/opt/rocm-7.2.0"


# --- the tarball script, run here against file:// URLs -----------------------------------------------


def tarball(path: Path) -> str:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(".info/version")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"7.1.1\n"))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_script(url: str, sha256: str, dest: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", tarball_script(url, sha256, str(dest))], capture_output=True, text=True)


def test_tarball_unpacked_only_with_the_right_sha256(tmp_path: Path):
    sha = tarball(tmp_path / "rocm.tar.gz")
    dest = tmp_path / "opt" / "rocm-7.1.1"
    wrong = run_script(f"file://{tmp_path}/rocm.tar.gz", SHA, dest)
    assert wrong.returncode == 1
    assert f"rocm_tarball_sha256 mismatch: file://{tmp_path}/rocm.tar.gz has sha256 {sha}, expected {SHA}" in wrong.stderr
    assert list((tmp_path / "opt").iterdir()) == []  # nothing unpacked, no partial directory left

    right = run_script(f"file://{tmp_path}/rocm.tar.gz", sha, dest)
    assert right.returncode == 0, right.stderr
    assert (dest / ".info/version").read_text() == "7.1.1\n"
    assert (dest / STAMP).read_text() == sha + "\n"
    assert [p.name for p in (tmp_path / "opt").iterdir()] == ["rocm-7.1.1"]


def test_tarball_never_replaces_a_directory_it_did_not_unpack(tmp_path: Path):
    sha = tarball(tmp_path / "rocm.tar.gz")
    dest = tmp_path / "opt" / "rocm-7.1.1"
    (dest / "bin").mkdir(parents=True)
    proc = run_script(f"file://{tmp_path}/rocm.tar.gz", sha, dest)
    assert proc.returncode == 1
    assert "was not unpacked from a tarball by this step" in proc.stderr
    assert (dest / "bin").is_dir()


# --- settings -------------------------------------------------------------------------------------


def problems(**data) -> list[str]:
    inventory = Inventory(([("halo1", {"ssh_hostname": "10.151.0.11", **data})], {}))
    with pytest.raises(SettingsError) as info:
        validate_inventory(inventory)
    return info.value.problems


def test_defaults():
    s = Settings()
    assert (s.rocm_source, s.rocm_version, s.rocm_tarball_url, s.rocm_tarball_sha256) == ("distro", "7.2.1", None, None)
    assert s.rocm_repo_url == "https://repo.radeon.com/rocm/apt"


def test_therock_needs_url_and_sha256():
    found = problems(rocm_source="therock")
    assert found == [
        "halo1: rocm_tarball_url = None is invalid: rocm_source is 'therock'; expected the http:// or https:// "
        "URL of the TheRock tarball to install. Fix it in the inventory's host data or group_data/all.py.",
        "halo1: rocm_tarball_sha256 = None is invalid: rocm_source is 'therock'; expected the tarball's sha256 "
        "(64 hex digits), checked before it is unpacked. Fix it in the inventory's host data or group_data/all.py.",
    ]


def test_therock_with_url_and_sha256_is_valid_and_sha256_lower_case():
    s = Settings(rocm_source="therock", rocm_tarball_url="https://example.org/t.tar.gz", rocm_tarball_sha256=SHA.upper())
    assert s.rocm_tarball_sha256 == SHA


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("rocm_source", "ubuntu", ["one of 'distro'", "'amd-repo'", "'therock'"]),
        ("rocm_version", "latest", ["such as '7.2.1'"]),
        ("rocm_version", 7.1, ["such as '7.2.1'"]),
        ("rocm_repo_url", "repo.radeon.com/rocm/apt", ["http:// or https:// URL"]),
        ("rocm_repo_url", "ftp://repo.radeon.com/rocm/apt", ["http:// or https:// URL"]),
        ("rocm_repo_key_url", "https://repo radeon com/key", ["an https:// URL"]),
        ("rocm_repo_key_url", "http://repo.radeon.com/rocm/rocm.gpg.key",
         ["expected an https:// URL such as 'https://repo.radeon.com/rocm/rocm.gpg.key' (never http://"]),
        ("rocm_tarball_url", "file:///tmp/rocm.tar.gz", ["http:// or https:// URL"]),
        ("rocm_tarball_sha256", "abc123", ["64 hex digits"]),
        ("rocm_tarball_sha256", "g" * 64, ["64 hex digits"]),
        ("rocm_packages_extra", "rocm-smi", ["a list of package names"]),
        ("rocm_packages_extra", ["rocm smi"], ["entry 'rocm smi' is not allowed"]),
        ("rocm_packages_extra", ["amdgpu-dkms"], ["entry 'amdgpu-dkms' is not allowed", "MES 0x83"]),
        ("rocm_packages_extra", ["amdgpu-dkms-firmware"], ["entry 'amdgpu-dkms-firmware' is not allowed"]),
    ],
)
def test_bad_rocm_values(variable, value, words):
    (problem,) = problems(**{variable: value})
    assert problem.startswith(f"halo1: {variable} = {value!r} is invalid: ")
    for word in words:
        assert word in problem


def test_misspelt_rocm_variable_is_an_error():
    (problem,) = problems(rocm_sorce="amd-repo")
    assert "did you mean rocm_source?" in problem


# --- where each source puts ROCm, refusals before any change, and the operations --------------------

THEROCK = {"rocm_source": "therock", "rocm_tarball_url": "https://example.org/therock.tar.gz",
           "rocm_tarball_sha256": SHA}


def test_rocm_prefix_per_source():
    assert rocm_prefix("distro", "7.2.1") == "/usr"
    assert rocm_prefix("amd-repo", "7.2.1") == "/opt/rocm"
    assert rocm_prefix("therock", "7.2.1") == "/opt/rocm-7.2.1"


def test_debian_testing_goes_by_its_codename(monkeypatch):
    ops = deploy_ops(install_rocm, {}, {Distro: distro("debian", None, "forky")}, monkeypatch)
    assert list(ops) == ["Install ROCm | Install ROCm packages: hipcc, libamdhip64-dev, libhipblas-dev, "
                         "librocblas-dev, rocminfo"]


def test_ld_conf_lists_the_prefix_libraries():
    assert ld_conf("/opt/rocm").splitlines()[1:] == ["/opt/rocm/lib", "/opt/rocm/lib64"]


def test_amd_repo_operations_on_ubuntu_24(monkeypatch):
    ops = deploy_ops(install_rocm, {"rocm_source": "amd-repo"}, {Distro: distro("ubuntu", "24.04")},
                     monkeypatch)
    names = [n.removeprefix("Install ROCm | ") for n in ops]
    assert names == [
        "Install curl, ca-certificates, gpg for this step", "Install AMD's ROCm signing key as a keyring",
        "Add AMD's ROCm apt repository", "Pin AMD's ROCm repository to priority 600",
        "Update apt lists for the ROCm repository",
        "Install ROCm packages: rocm-hip-runtime, rocm-hip-runtime-dev, hipcc, hipblas-dev, rocblas-dev, rocminfo",
        "List /opt/rocm/lib for the dynamic linker", "Update the dynamic linker's cache (ldconfig)",
    ]
    assert any("/etc/ld.so.conf.d/rocm.conf" in c for c in ops["Install ROCm | List /opt/rocm/lib for the dynamic linker"])
    assert ops["Install ROCm | Update the dynamic linker's cache (ldconfig)"] == ["ldconfig"]
    assert "URIs: https://repo.radeon.com/rocm/apt/7.2.1" in deb822_source(
        "https://repo.radeon.com/rocm/apt", Settings().rocm_version, "noble")


def test_therock_operations_unpack_link_and_ldconfig(monkeypatch):
    ops = deploy_ops(install_rocm, THEROCK, {Distro: distro("fedora", "43")}, monkeypatch)
    names = [n.removeprefix("Install ROCm | ") for n in ops]
    assert names == ["Install curl, ca-certificates, tar for this step", "Install the ROCm tarball into /opt/rocm-7.2.1",
                     "Point /opt/rocm at /opt/rocm-7.2.1", "List /opt/rocm-7.2.1/lib for the dynamic linker",
                     "Update the dynamic linker's cache (ldconfig)"]
    assert "HALO_DEST=/opt/rocm-7.2.1" in ops["Install ROCm | Install the ROCm tarball into /opt/rocm-7.2.1"][0]


def test_the_distro_packages_need_no_linker_configuration(monkeypatch):
    ops = deploy_ops(install_rocm, {}, {Distro: distro("fedora", "43")}, monkeypatch)
    assert list(ops) == ["Install ROCm | Install ROCm packages: rocm-hip-devel, hipcc, hipblas-devel, "
                         "rocblas-devel, rocminfo"]
    assert LD_CONF not in str(ops)


@pytest.mark.parametrize(("facts", "words"), [
    (distro("debian", "13", "trixie"), ["halo1: rocm_source = 'distro' is invalid: the HIP backend cannot use it on "
                                        "debian 13: Debian 13's own HIP is 5.7", "HIP 6.1 or newer", "'amd-repo'",
                                        "'therock'", 'Debian testing "forky"',
                                        "Fix it in the inventory's host data or group_data/all.py."]),
    (distro("debian", "12", "bookworm"), ["halo1: rocm_source = 'distro' is invalid:", "no hipBLAS or rocBLAS"]),
    (distro("ubuntu", "24.04", "noble"), ["halo1: rocm_source = 'distro' is invalid: the HIP backend cannot use it "
                                          "on ubuntu 24.04:", "no kernels for the gfx1151"]),
])
def test_a_source_that_cannot_build_hip_stops_the_run_before_any_operation(monkeypatch, facts, words):
    with pytest.raises(SettingsError) as info:
        deploy_ops(install_rocm, {}, {Distro: facts}, monkeypatch)
    for word in words:
        assert word in str(info.value)


def test_debian_13_distro_is_fine_without_the_hip_backend(monkeypatch):
    assert deploy_ops(install_rocm, {"llama_cpp_backend": "vulkan"},
                      {Distro: distro("debian", "13", "trixie")}, monkeypatch) == {}
