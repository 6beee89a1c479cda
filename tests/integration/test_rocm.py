"""deploys/rocm.py on the lab hosts, each source for real, each run twice (the second changes nothing).

- distro: refused on Debian 12 (no hipBLAS/rocBLAS) and Debian 13 (HIP 5.7) before any change; Debian
  testing's own packages are installed for real in test_hip_forky.py.
- amd-repo: a signed apt repository built here with tiny packages named like AMD's, served on the lab
  bridge, on halo1 (Debian 12, whose own hipcc is newer than the test packages: the pin must win); its
  signing key over https from a server whose certificate a CA made in the test signs (trusted on halo1
  for that test only; before that, curl refuses it); the key's URL over plain http is refused.
- therock: a tarball built here and served the same way, on halo3; a wrong sha256 unpacks nothing.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from email.utils import formatdate
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deploys.rocm import ROCM_PACKAGES, apt_pin, deb822_source
from lab.pyinfra_cli import pyinfra, pyinfra_facts
from tests.integration.conftest import assert_no_changes
from lab import lab
from lab.http_files import FileServer
from lab.tls import TestCA

VERSION = "7.2.1"  # the default rocm_version
SUITE_DEBIAN_12 = "jammy"  # AMD's suite for Debian 12
AMD_BUILD = "70201-38~22.04"
ARCHIVES_BUSY = "Could not get lock /var/cache/apt/archives/lock"


def on(name: str, command: str) -> str:
    return lab.ssh(name, command).stdout


def deploy(inventory: str, name: str, data: dict[str, str]) -> subprocess.CompletedProcess:
    """deploys/rocm.py on one lab host. The hosts of all labs on this machine share one apt archive
    cache, which apt locks for a whole install: while another lab installs, wait and run again."""
    deadline = time.monotonic() + 900
    while True:
        proc = pyinfra(inventory, "deploys/rocm.py", "--limit", name, data=data)
        if ARCHIVES_BUSY not in proc.stdout + proc.stderr or time.monotonic() > deadline:
            return proc
        time.sleep(10)


# --- a web server on the lab bridge -------------------------------------------------------------

class Server:
    """Serves a directory on the lab bridge address on a free port and counts requests per path."""

    def __init__(self, root: Path):
        self.root = root
        requests: dict[str, int] = {}

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:
                requests[self.path] = requests.get(self.path, 0) + 1

        self.requests = requests
        self.httpd = ThreadingHTTPServer((f"{lab.SUBNET}.1", 0), partial(Handler, directory=str(root)))
        self.url = f"http://{lab.SUBNET}.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    srv = Server(root)
    yield srv
    srv.close()


# --- a signed apt repository shaped like AMD's ----------------------------------------------------

def build_deb(out: Path, name: str, version: str, depends: str = "", files: dict[str, str] | None = None) -> Path:
    """A tiny binary package made with dpkg-deb."""
    tree = out / f"{name}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    control = f"Package: {name}\nVersion: {version}\nArchitecture: amd64\nMaintainer: halo-provision tests\n"
    control += f"Depends: {depends}\n" if depends else ""
    control += f"Description: test stand-in for AMD's {name}\n"
    (tree / "DEBIAN/control").write_text(control)
    for path, text in (files or {}).items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_text(text)
    deb = out / f"{name}_{version}_amd64.deb"
    subprocess.run(["dpkg-deb", "-Zgzip", "--root-owner-group", "--build", str(tree), str(deb)],
                   check=True, capture_output=True)
    return deb


def release_file(dist: Path, suite: str) -> str:
    """dists/<suite>/Release with the sha256 of every index below it."""
    lines = ["Origin: halo-provision tests", "Label: ROCm test repository", f"Suite: {suite}", f"Codename: {suite}",
             f"Date: {formatdate(usegmt=True)}", "Architectures: amd64", "Components: main", "SHA256:"]
    for path in sorted(p for p in dist.rglob("*") if p.is_file()):
        data = path.read_bytes()
        lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {path.relative_to(dist)}")
    return "\n".join(lines) + "\n"


def gpg(home: str, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["gpg", "--batch", "--quiet", "--homedir", home, *args], check=True, capture_output=True, **kw)


def build_amd_repo(root: Path) -> bytes:
    """<root>/rocm/apt/<VERSION> (pool + dists/jammy signed) and <root>/rocm/rocm.gpg.key; returns the key."""
    repo = root / "rocm" / "apt" / VERSION
    pool = repo / "pool" / "main"
    pool.mkdir(parents=True)
    debs = [
        build_deb(pool, "rocm-core", f"{VERSION}.{AMD_BUILD}", files={f"opt/rocm-{VERSION}/.info/version": f"{VERSION}-38\n"}),
        build_deb(pool, "rocminfo", f"1.0.0.{AMD_BUILD}", "rocm-core"),
        build_deb(pool, "hipcc", f"1.1.1.{AMD_BUILD}", "rocm-core"),
        build_deb(pool, "rocm-hip-runtime", f"{VERSION}.{AMD_BUILD}", "rocm-core, rocminfo"),
        build_deb(pool, "rocm-hip-runtime-dev", f"{VERSION}.{AMD_BUILD}", "rocm-hip-runtime, hipcc"),
        build_deb(pool, "rocblas-dev", f"5.1.0.{AMD_BUILD}", "rocm-core"),
        build_deb(pool, "hipblas-dev", f"3.1.0.{AMD_BUILD}", "rocblas-dev"),
        build_deb(pool, "amdgpu-dkms", f"6.16.6.30200100-{AMD_BUILD}"),
    ]
    assert sorted(p.name.split("_")[0] for p in debs[:-1]) == sorted(ROCM_PACKAGES[("amd-repo", "debian")] + ["rocm-core"])
    for tree in pool.glob("*-tree"):
        shutil.rmtree(tree)
    binary = repo / "dists" / SUITE_DEBIAN_12 / "main" / "binary-amd64"
    binary.mkdir(parents=True)
    packages = subprocess.run(["dpkg-scanpackages", "--multiversion", "pool"], cwd=repo, check=True,
                              capture_output=True, text=True).stdout
    (binary / "Packages").write_text(packages)
    (binary / "Packages.gz").write_bytes(gzip.compress(packages.encode()))
    dist = repo / "dists" / SUITE_DEBIAN_12
    (dist / "Release").write_text(release_file(dist, SUITE_DEBIAN_12))

    home = tempfile.mkdtemp(prefix="halo-gpg-")  # short path: gpg-agent's socket lives here
    try:
        gpg(home, "--passphrase", "", "--pinentry-mode", "loopback", "--quick-gen-key",
            "halo-provision test repository", "ed25519", "sign", "never")
        key = gpg(home, "--armor", "--export").stdout
        gpg(home, "--clearsign", "-o", str(dist / "InRelease"), str(dist / "Release"))
        gpg(home, "--armor", "--detach-sign", "-o", str(dist / "Release.gpg"), str(dist / "Release"))
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    (root / "rocm" / "rocm.gpg.key").write_bytes(key)
    return key


def fingerprint(armored: bytes) -> str:
    """The primary key fingerprint of an ASCII-armoured public key."""
    home = tempfile.mkdtemp(prefix="halo-gpg-")
    try:
        colons = gpg(home, "--show-keys", "--with-colons", input=armored).stdout.decode()
        return next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:"))
    finally:
        shutil.rmtree(home, ignore_errors=True)


def dearmor(armored: bytes) -> bytes:
    home = tempfile.mkdtemp(prefix="halo-gpg-")
    try:
        return gpg(home, "--dearmor", input=armored).stdout
    finally:
        shutil.rmtree(home, ignore_errors=True)


# --- tests ----------------------------------------------------------------------------------------

def test_distro_source_is_refused_on_debian_13_before_any_change(lab_inventory):
    # Debian 13's HIP is 5.7; llama.cpp's HIP backend needs 6.1 (Debian testing's own ROCm is installed
    # and used for a real gfx1151 build in test_hip_forky.py).
    before = on("halo2", "ls -l --time-style=full-iso /etc/apt /var/lib/dpkg/status")
    proc = deploy(lab_inventory, "halo2", {"rocm_source": "distro"})
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "halo2: rocm_source = 'distro' is invalid: the HIP backend cannot use it on debian 13: Debian 13's own " \
           "HIP is 5.7" in output, output
    assert "'amd-repo'" in output and "'therock'" in output and 'Debian testing "forky"' in output
    assert "--> Starting operation" not in output  # refused while the run was prepared
    assert on("halo2", "ls -l --time-style=full-iso /etc/apt /var/lib/dpkg/status") == before
    assert on("halo2", "dpkg-query -W hipcc 2>/dev/null || true") == ""


def test_distro_source_fails_on_debian_12_with_the_fix(lab_inventory):
    proc = deploy(lab_inventory, "halo1", {"rocm_source": "distro"})
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Debian 12's archive has no hipBLAS or rocBLAS" in output
    assert "rocm_source = 'amd-repo'" in output


@pytest.fixture
def key_server(tmp_path: Path, server):
    """An https server for the signing key (rocm_repo_key_url takes https only), with a certificate of a CA
    made here; the test trusts it on a lab host with `key_server.ca.trusted_on(name)`."""
    ca = TestCA(tmp_path / "ca")
    srv = FileServer(server.root, f"{lab.SUBNET}.1", tls=ca.server_context(f"{lab.SUBNET}.1"))
    srv.ca = ca
    yield srv
    srv.close()


def test_amd_repo_from_a_signed_repository(lab_inventory, server, key_server):
    key = build_amd_repo(server.root)
    repo_url = f"{server.url}/rocm/apt"
    data = {"rocm_source": "amd-repo", "rocm_repo_url": repo_url, "rocm_repo_key_url": f"{key_server.url}/rocm/rocm.gpg.key",
            "rocm_repo_key_fingerprint": fingerprint(key)}
    nothing = "ls /etc/apt/keyrings/rocm.gpg /etc/apt/sources.list.d/rocm.sources 2>/dev/null || true"

    # the key over plain http: refused before any change
    plain = deploy(lab_inventory, "halo1", {**data, "rocm_repo_key_url": f"{server.url}/rocm/rocm.gpg.key"})
    assert plain.returncode != 0
    assert (f"halo1: rocm_repo_key_url = '{server.url}/rocm/rocm.gpg.key' is invalid: expected an https:// URL"
            in plain.stdout + plain.stderr), plain.stdout + plain.stderr
    assert "--> Starting operation" not in plain.stdout + plain.stderr
    # https from a server whose certificate halo1 cannot verify: curl refuses it, nothing trusted
    untrusted = deploy(lab_inventory, "halo1", data)
    assert untrusted.returncode != 0 and "SSL certificate problem" in untrusted.stdout + untrusted.stderr
    assert on("halo1", nothing) == ""
    count = "grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt"
    trusted = on("halo1", count)
    with key_server.ca.trusted_on("halo1"):
        assert int(on("halo1", count)) == int(trusted) + 1
        _signed_repository(lab_inventory, key, repo_url, data, nothing)
    assert key_server.requests and all(path == "/rocm/rocm.gpg.key" for _, path, _ in key_server.requests)
    assert on("halo1", f"ls -A /usr/local/share/ca-certificates; {count}") == trusted  # for this test only


def _signed_repository(lab_inventory, key, repo_url, data, nothing):
    # AMD's fingerprint (the default) does not match this repository's key: refused, nothing trusted
    refused = deploy(lab_inventory, "halo1", {**data, "rocm_repo_key_fingerprint": "CA8BB4727A47B4D09B4EE8969386B48A1A693C5C"})
    assert refused.returncode != 0
    assert (f"has the primary key fingerprint(s) '{fingerprint(key)}', expected exactly "
            "CA8BB4727A47B4D09B4EE8969386B48A1A693C5C; nothing was installed") in refused.stdout + refused.stderr
    assert on("halo1", nothing) == ""

    first = deploy(lab_inventory, "halo1", data)
    assert first.returncode == 0, first.stdout + first.stderr
    assert on("halo1", "base64 -w0 /etc/apt/keyrings/rocm.gpg") == base64.b64encode(dearmor(key)).decode()
    assert on("halo1", "cat /etc/apt/sources.list.d/rocm.sources") == deb822_source(repo_url, VERSION, SUITE_DEBIAN_12)
    assert on("halo1", "cat /etc/apt/preferences.d/rocm-pin-600") == apt_pin(repo_url)
    apt_files = "/etc/apt/keyrings/rocm.gpg /etc/apt/sources.list.d/rocm.sources /etc/apt/preferences.d/rocm-pin-600"
    assert set(on("halo1", f"stat -c '%U:%G %a' {apt_files}").split()) == {"root:root", "644"}  # apt trusts them
    versions = dict(line.split() for line in on("halo1", "dpkg-query -W -f '${Package} ${Version}\\n' "
                                                 + " ".join(ROCM_PACKAGES[("amd-repo", "debian")])).splitlines())
    assert versions["hipcc"] == f"1.1.1.{AMD_BUILD}"  # Debian 12's hipcc 5.2.3 is newer: the pin chose AMD's
    assert set(versions) == set(ROCM_PACKAGES[("amd-repo", "debian")])
    assert "Candidate: (none)" in on("halo1", "apt-cache policy amdgpu-dkms")  # served, but blocked
    facts = pyinfra_facts(lab_inventory, "facts.rocm.RocmVersion", limit="halo1")
    assert facts["facts.rocm.RocmVersion"]["halo1"] == VERSION
    assert on("halo1", "cat /etc/ld.so.conf.d/rocm.conf").splitlines()[1:] == ["/opt/rocm/lib", "/opt/rocm/lib64"]

    assert_no_changes(deploy(lab_inventory, "halo1", data))


def make_tarball(path: Path) -> str:
    """A TheRock-shaped tarball (files at the top: bin/, lib/, .info/version); returns its sha256."""
    members = {"bin/hipcc": f"#!/bin/sh\necho 'HIP version: {VERSION} (test tarball)'\n",
               "lib/libamdhip64.so.7": "not a library\n", ".info/version": f"{VERSION}-0\n"}
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(text), 0o755 if name.startswith("bin/") else 0o644
            tar.addfile(info, io.BytesIO(text.encode()))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_therock_tarball_checked_then_unpacked_once(lab_inventory, server):
    sha256 = make_tarball(server.root / "therock-dist-linux-gfx1151.tar.gz")
    url = f"{server.url}/therock-dist-linux-gfx1151.tar.gz"
    data = {"rocm_source": "therock", "rocm_tarball_url": url, "rocm_tarball_sha256": sha256}
    dest = f"/opt/rocm-{VERSION}"

    wrong = deploy(lab_inventory, "halo3", {**data, "rocm_tarball_sha256": "f" * 64})
    output = wrong.stdout + wrong.stderr
    assert wrong.returncode != 0
    assert f"rocm_tarball_sha256 mismatch: {url} has sha256 {sha256}" in output
    assert on("halo3", "ls -a /opt").split() == [".", ".."], "a failed check must leave nothing in /opt"

    first = deploy(lab_inventory, "halo3", data)
    assert first.returncode == 0, first.stdout + first.stderr
    assert on("halo3", "readlink /opt/rocm").strip() == dest
    assert on("halo3", "/opt/rocm/bin/hipcc").startswith(f"HIP version: {VERSION}")
    assert on("halo3", "cat /etc/ld.so.conf.d/rocm.conf").splitlines()[1:] == [f"{dest}/lib", f"{dest}/lib64"]
    assert f"{dest}/lib:" in on("halo3", "ldconfig -v 2>/dev/null | grep ^/")  # ldconfig ran with it
    assert on("halo3", f"cat {dest}/.halo-tarball-sha256").strip() == sha256
    facts = pyinfra_facts(lab_inventory, "facts.rocm.RocmVersion", limit="halo3")
    assert facts["facts.rocm.RocmVersion"]["halo3"] == VERSION

    assert_no_changes(deploy(lab_inventory, "halo3", data))
    assert server.requests["/therock-dist-linux-gfx1151.tar.gz"] == 2, "downloaded again after it was unpacked"
