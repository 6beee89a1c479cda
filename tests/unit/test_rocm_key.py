"""deploys/rocm.py's key_script run for real: gpg keys made here, fetched by curl from file:// URLs."""

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from deploys.rocm import key_script


def make_key(name: str) -> tuple[bytes, str]:
    """An ASCII-armoured public key and its fingerprint."""
    home = tempfile.mkdtemp(prefix="halo-gpg-")  # short path: gpg-agent's socket lives here
    try:
        gpg = ["gpg", "--homedir", home, "--batch", "--quiet"]
        subprocess.run(gpg + ["--passphrase", "", "--pinentry-mode", "loopback", "--quick-gen-key", name,
                              "ed25519", "sign", "never"], check=True, capture_output=True)
        armored = subprocess.run(gpg + ["--armor", "--export"], check=True, capture_output=True).stdout
        colons = subprocess.run(gpg + ["--with-colons", "--list-keys"], check=True, capture_output=True, text=True).stdout
        fingerprint = next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:"))
        return armored, fingerprint
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def keys():
    return make_key("halo-provision test key A"), make_key("halo-provision test key B")


def install(tmp_path: Path, armored: bytes, fingerprint: str) -> subprocess.CompletedProcess:
    (tmp_path / "key.asc").write_bytes(armored)
    script = key_script(f"file://{tmp_path}/key.asc", fingerprint, str(tmp_path / "keyrings" / "rocm.gpg"))
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True)


def test_the_key_with_the_pinned_fingerprint_is_installed(tmp_path, keys):
    (armored, fingerprint), _ = keys
    proc = install(tmp_path, armored, fingerprint)
    assert proc.returncode == 0, proc.stderr
    keyring = tmp_path / "keyrings" / "rocm.gpg"
    assert keyring.stat().st_mode & 0o777 == 0o644 and keyring.read_bytes()[:1] != b"-"  # binary, not armoured


def test_another_key_is_refused_and_nothing_installed(tmp_path, keys):
    (_, fingerprint), (other, other_fingerprint) = keys
    proc = install(tmp_path, other, fingerprint)
    assert proc.returncode == 1
    assert f"has the primary key fingerprint(s) '{other_fingerprint}', expected exactly {fingerprint}" in proc.stderr
    assert not (tmp_path / "keyrings").exists()


def test_a_second_key_added_to_the_file_is_refused(tmp_path, keys):
    (armored, fingerprint), (other, other_fingerprint) = keys
    proc = install(tmp_path, armored + other, fingerprint)
    assert proc.returncode == 1
    assert f"'{fingerprint} {other_fingerprint}'" in proc.stderr
    assert not (tmp_path / "keyrings").exists()
