"""Install ROCm: what building llama.cpp with HIP needs (hipcc/clang, HIP, hipBLAS, rocBLAS, rocminfo).

    pyinfra inventories/lab.py deploys/rocm.py
    pyinfra inventories/lab.py deploys/rocm.py --data rocm_source=amd-repo

`rocm_source` says where ROCm comes from:

- ``distro``: the distribution's own packages, in /usr (Fedora; Debian testing "forky" and newer).
  Not on Ubuntu: its archive carries Debian's ROCm 5.x packaging, whose rocBLAS has no gfx1151
  kernels. Not on Debian 13: its HIP 5.7 is older than the 6.1 llama.cpp's HIP backend needs.
- ``amd-repo``: AMD's apt repository (Ubuntu 22.04/24.04; Debian 12/13 use AMD's Ubuntu suites):
  the signing key dearmored into /etc/apt/keyrings/rocm.gpg, the deb822 source
  /etc/apt/sources.list.d/rocm.sources for `rocm_version` with Signed-By, a pin of 600 for the
  repository's host in /etc/apt/preferences.d/rocm-pin-600, then the packages, into /opt/rocm.
- ``therock``: the tarball at `rocm_tarball_url`, downloaded once and checked against
  `rocm_tarball_sha256` before anything is unpacked into /opt/rocm-<version>; /opt/rocm points at it.

For ``amd-repo`` and ``therock`` the step also does AMD's post-install step: the prefix's lib/ and
lib64/ in /etc/ld.so.conf.d/rocm.conf, then ldconfig (only when that file or the tarball changed).
Their bin/ and llvm/bin are not put on PATH: the llama.cpp build finds them from `rocm_source`.

A combination that cannot build llama.cpp's HIP backend (a distro without hipBLAS/rocBLAS or with a
HIP older than 6.1, AMD's repository on a distro it has no suite for) stops the run while it is
prepared, before any change, naming host, variable, value and what to use instead.

amdgpu-dkms and its firmware are never installed: Strix Halo runs on the in-kernel amdgpu driver,
and the DKMS firmware package has shipped the bad MES firmware 0x83 that hangs gfx1151. With
``amd-repo`` the pin file also blocks both packages (priority -1) in case something depends on them.
"""

from __future__ import annotations

from io import StringIO
from urllib.parse import urlsplit

from pyinfra import host, logger
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.facts.files import FileContents
from pyinfra.operations import apt, files, server

from deploys import shipped
from deploys.common import install_packages
from deploys.plan import when_changed
from deploys.settings import Settings, SettingsError, settings
from facts.distro import Distro
from facts.rocm import KeyringDigests

# The packages llama.cpp's HIP build needs, per (rocm_source, distro ID). Debian's names were
# checked with apt-cache on Debian 13; AMD's are the names in its apt repository.
AMD_PACKAGES = ["rocm-hip-runtime", "rocm-hip-runtime-dev", "hipcc", "hipblas-dev", "rocblas-dev", "rocminfo"]
ROCM_PACKAGES: dict[tuple[str, str], list[str]] = {
    ("distro", "fedora"): ["rocm-hip-devel", "hipcc", "hipblas-devel", "rocblas-devel", "rocminfo"],
    ("distro", "debian"): ["hipcc", "libamdhip64-dev", "libhipblas-dev", "librocblas-dev", "rocminfo"],
    ("amd-repo", "ubuntu"): AMD_PACKAGES,
    ("amd-repo", "debian"): AMD_PACKAGES,
    ("therock", "fedora"): [],
    ("therock", "debian"): [],
    ("therock", "ubuntu"): [],
}
# Tools this step runs on the host itself.
TOOLS = {"amd-repo": ["curl", "ca-certificates", "gpg"], "therock": ["curl", "ca-certificates", "tar"]}
# AMD's apt suite per (distro ID, major version): Debian uses the Ubuntu suite AMD builds for it.
AMD_SUITES = {("ubuntu", 22): "jammy", ("ubuntu", 24): "noble", ("debian", 12): "jammy", ("debian", 13): "noble"}
DEBIAN_MIN_DISTRO = 13  # Debian 12 has only HIP 5.2, no hipBLAS or rocBLAS
# llama.cpp's ggml/src/ggml-hip/CMakeLists.txt: `if (${hip_VERSION} VERSION_LESS 6.1) message(FATAL_ERROR ...)`.
HIP_MIN = "6.1"
# HIP in Debian's own archive per release, where it is older than HIP_MIN (checked with apt-cache, 2026-11).
DEBIAN_OLD_HIP = {13: "5.7"}

KEYRING = "/etc/apt/keyrings/rocm.gpg"
SOURCES = "/etc/apt/sources.list.d/rocm.sources"
PIN = "/etc/apt/preferences.d/rocm-pin-600"
LD_CONF = "/etc/ld.so.conf.d/rocm.conf"
STAMP = ".halo-tarball-sha256"  # in /opt/rocm-<version>: the sha256 of the tarball unpacked there
APT_CACHE_S = 24 * 3600


class Unsupported(Exception):
    """This rocm_source does not work on this distribution; the message says why and what to use."""


def rocm_packages(source: str, distro: str, major: int | None) -> list[str]:
    """The ROCm packages of `source` on a distro (ID, major version), or Unsupported with a fix.

    >>> rocm_packages("distro", "debian", 14)[:2]
    ['hipcc', 'libamdhip64-dev']
    """
    if source == "distro" and distro == "ubuntu":
        raise Unsupported(
            "Ubuntu's archive carries Debian's ROCm 5.x packaging (HIP 5.7, rocBLAS 5.5 built only for "
            "GPUs up to gfx1102, no kernels for the gfx1151 of Strix Halo); set rocm_source = 'amd-repo' "
            "to use AMD's apt repository"
        )
    if source == "distro" and distro == "debian" and (major or 0) < DEBIAN_MIN_DISTRO:
        raise Unsupported(
            f"Debian {major}'s archive has no hipBLAS or rocBLAS (Debian 13 is the first with them); "
            "set rocm_source = 'amd-repo' (AMD's apt repository) or 'therock'"
        )
    if source == "distro" and distro == "debian" and major in DEBIAN_OLD_HIP:
        raise Unsupported(
            f"Debian {major}'s own HIP is {DEBIAN_OLD_HIP[major]}, and llama.cpp's HIP backend needs HIP "
            f"{HIP_MIN} or newer (its CMake stops with 'At least ROCM/HIP V6.1 is required'); set "
            "rocm_source = 'amd-repo' (AMD's apt repository) or 'therock' (a TheRock tarball), or run "
            "Debian testing \"forky\" (HIP 6.4.3 in its own archive)"
        )
    if source == "amd-repo" and (distro, major) not in AMD_SUITES:
        supported = ", ".join(f"{d.capitalize()} {m}" for d, m in AMD_SUITES)
        raise Unsupported(
            f"AMD's apt repository has suites for {supported}, not {distro} {major}; "
            "use rocm_source = 'distro' on Fedora, or 'therock'"
        )
    packages = ROCM_PACKAGES.get((source, distro))
    if packages is None:
        raise Unsupported(f"no way to install ROCm from {source!r} on {distro} {major} is known; use 'therock'")
    return list(packages)


def rocm_prefix(source: str, version: str) -> str:
    """Where `source` installs ROCm (bin/, lib/, llvm/ below it).

    >>> rocm_prefix("distro", "7.2.1"), rocm_prefix("amd-repo", "7.2.1"), rocm_prefix("therock", "7.2.1")
    ('/usr', '/opt/rocm', '/opt/rocm-7.2.1')
    """
    return {"distro": "/usr", "amd-repo": "/opt/rocm"}.get(source) or opt_dir(version)


def ld_conf(prefix: str) -> str:
    """/etc/ld.so.conf.d/rocm.conf: AMD's post-install step, ROCm's libraries for the dynamic linker."""
    return f"# ROCm's libraries (written by halo-provision deploys/rocm.py)\n{prefix}/lib\n{prefix}/lib64\n"


def deb822_source(repo_url: str, version: str, suite: str) -> str:
    """/etc/apt/sources.list.d/rocm.sources: AMD's repository for one ROCm release, signed by KEYRING."""
    return (
        "# ROCm from AMD's apt repository (written by halo-provision deploys/rocm.py)\n"
        "Types: deb\n"
        f"URIs: {repo_url.rstrip('/')}/{version}\n"
        f"Suites: {suite}\n"
        "Components: main\n"
        "Architectures: amd64\n"
        f"Signed-By: {KEYRING}\n"
    )


def apt_pin(repo_url: str) -> str:
    """/etc/apt/preferences.d/rocm-pin-600: prefer the repository's ROCm, never amdgpu-dkms."""
    site = urlsplit(repo_url).hostname
    return (
        "# Prefer ROCm from AMD's repository over the distribution's older packages of the same names\n"
        "Package: *\n"
        f"Pin: origin {site}\n"
        "Pin-Priority: 600\n"
        "\n"
        "# Never amdgpu-dkms or its firmware: the firmware package has shipped the MES 0x83 that hangs gfx1151\n"
        "Package: amdgpu-dkms amdgpu-dkms-firmware\n"
        "Pin: release *\n"
        "Pin-Priority: -1\n"
    )


def opt_dir(version: str) -> str:
    """/opt/rocm-<major.minor.patch>, as AMD names it: '7.2' -> '/opt/rocm-7.2.0'."""
    parts = version.split(".")
    return "/opt/rocm-" + ".".join(parts + ["0"] * (3 - len(parts)))


def tarball_script(url: str, sha256: str, dest: str) -> str:
    """deploys/scripts/rocm-tarball.sh as one command: download the tarball next to `dest`, check its
    sha256, unpack it, then move it into place."""
    env = {"HALO_URL": url, "HALO_SHA256": sha256, "HALO_DEST": dest, "HALO_STAMP": STAMP}
    return str(shipped.script_command("rocm-tarball.sh", env))


def key_script(url: str, fingerprint: str, path: str) -> str:
    """deploys/scripts/rocm-key.sh as one command: fetch the key at `url` aside, and install it dearmored
    as `path` only when it holds exactly one primary key, with `fingerprint` (anything else fails with
    both fingerprints; nothing is installed)."""
    env = {"HALO_URL": url, "HALO_FINGERPRINT": fingerprint, "HALO_PATH": path}
    return str(shipped.script_command("rocm-key.sh", env))


@operation()
def dearmored_key(url: str, fingerprint: str, path: str):
    """Install the ASCII-armoured key at `url` as the binary keyring `path` (for Signed-By), once its
    fingerprint is checked."""
    digests = host.get_fact(KeyringDigests, url=url, path=path)
    if digests["url"] is not None and digests["url"] == digests["path"]:
        host.noop(f"{path} holds the key from {url}")
        return
    yield StringCommand(key_script(url, fingerprint, path))


@operation()
def unpacked_tarball(url: str, sha256: str, dest: str):
    """Unpack the tarball at `url` into `dest` unless `dest` already holds the one with `sha256`."""
    stamp = host.get_fact(FileContents, path=f"{dest}/{STAMP}")
    if stamp and stamp[0].strip() == sha256:
        host.noop(f"{dest} holds the tarball with sha256 {sha256[:12]}...")
        return
    yield StringCommand(tarball_script(url, sha256, dest))


def amd_repo(s: Settings, suite: str) -> None:
    """AMD's apt repository: keyring, deb822 source, pin; apt lists refreshed when one changed."""
    key = dearmored_key(name="Install AMD's ROCm signing key as a keyring", url=s.rocm_repo_key_url,
                        fingerprint=s.rocm_repo_key_fingerprint, path=KEYRING)
    source = files.put(
        name="Add AMD's ROCm apt repository",
        src=StringIO(deb822_source(s.rocm_repo_url, s.rocm_version, suite)),
        dest=SOURCES,
        mode="644",
    )
    pin = files.put(
        name="Pin AMD's ROCm repository to priority 600", src=StringIO(apt_pin(s.rocm_repo_url)), dest=PIN, mode="644"
    )
    when_changed(name="Update apt lists for the ROCm repository", then=apt.update,
                 because={"the keyring changed": key, "the source changed": source, "the pin changed": pin})


def refuse_unsupported_rocm(s: Settings, d: dict) -> list[str]:
    """The ROCm packages of this host's rocm_source on its distribution (facts.distro.Distro), or a
    SettingsError naming host, rocm_source, its value and what to use instead, raised while the run
    is prepared: before any change on any host."""
    try:
        return rocm_packages(s.rocm_source, d["family"], d["major"])
    except Unsupported as e:
        where = f"{d['family']} {d['release'] or d['major']}"
        raise SettingsError(s._problem("rocm_source", f"the HIP backend cannot use it on {where}: {e}")) from e


@deploy("Install ROCm")
def install_rocm() -> None:
    s = settings(host)
    if s.llama_cpp_backend != "hip":
        logger.info(f"{host.name}: ROCm not installed: llama_cpp_backend is {s.llama_cpp_backend!r}, not 'hip'")
        return
    d = host.get_fact(Distro)
    packages = refuse_unsupported_rocm(s, d)
    distro, major = d["family"], d["major"]
    tools = TOOLS.get(s.rocm_source, [])
    install_packages(d, f"Install {', '.join(tools)} for this step", tools, cache_time=APT_CACHE_S)
    unpacked = None
    if s.rocm_source == "amd-repo":
        amd_repo(s, AMD_SUITES[(distro, major)])
    elif s.rocm_source == "therock":
        dest = opt_dir(s.rocm_version)
        unpacked = unpacked_tarball(
            name=f"Install the ROCm tarball into {dest}", url=s.rocm_tarball_url, sha256=s.rocm_tarball_sha256, dest=dest
        )
        files.link(name=f"Point /opt/rocm at {dest}", path="/opt/rocm", target=dest)
    wanted = packages + s.rocm_packages_extra
    install_packages(d, f"Install ROCm packages: {', '.join(wanted)}", wanted, cache_time=APT_CACHE_S)
    if s.rocm_source in ("amd-repo", "therock"):  # AMD's post-install step; the distro's packages are in /usr
        prefix = rocm_prefix(s.rocm_source, s.rocm_version)
        conf = files.put(name=f"List {prefix}/lib for the dynamic linker", src=StringIO(ld_conf(prefix)),
                         dest=LD_CONF, mode="644")
        when_changed(name="Update the dynamic linker's cache (ldconfig)", then=server.shell, commands=["ldconfig"],
                     because={f"{LD_CONF} changed": conf, "the tarball was unpacked": unpacked or False})


if __name__ in ("builtins", "__main__"):
    install_rocm()
