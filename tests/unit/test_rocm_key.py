"""deploys/rocm.py's key_script run for real: gpg keys made here, fetched by curl over https from a
server on this machine whose certificate a CA made here signs (curl trusts that CA by CURL_CA_BUNDLE)."""

import os
import shutil
import subprocess
import tempfile

import pytest

from deploys.rocm import key_script
from lab.http_files import FileServer
from lab.tls import TestCA


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


@pytest.fixture
def https(tmp_path):
    """A file server on 127.0.0.1 with TLS, its CA trusted by curl in the scripts run here."""
    (tmp_path / "www").mkdir()
    ca = TestCA(tmp_path / "ca")
    server = FileServer(tmp_path / "www", "127.0.0.1", tls=ca.server_context("127.0.0.1"))
    yield server
    server.close()


def install(server: FileServer, armored: bytes, fingerprint: str, url: str | None = None) -> subprocess.CompletedProcess:
    """key_script fetching `armored` from the https `server` (or from `url`)."""
    tmp_path = server.directory.parent
    (server.directory / "key.asc").write_bytes(armored)
    script = key_script(url or f"{server.url}/key.asc", fingerprint, str(tmp_path / "keyrings" / "rocm.gpg"))
    env = dict(os.environ, CURL_CA_BUNDLE=str(tmp_path / "ca" / "ca.crt"))
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)


def test_the_key_with_the_pinned_fingerprint_is_installed(tmp_path, keys, https):
    (armored, fingerprint), _ = keys
    proc = install(https, armored, fingerprint)
    assert proc.returncode == 0, proc.stderr
    keyring = tmp_path / "keyrings" / "rocm.gpg"
    assert keyring.stat().st_mode & 0o777 == 0o644 and keyring.read_bytes()[:1] != b"-"  # binary, not armoured


def test_another_key_is_refused_and_nothing_installed(tmp_path, keys, https):
    (_, fingerprint), (other, other_fingerprint) = keys
    proc = install(https, other, fingerprint)
    assert proc.returncode == 1
    assert f"has the primary key fingerprint(s) '{other_fingerprint}', expected exactly {fingerprint}" in proc.stderr
    assert not (tmp_path / "keyrings").exists()


def test_a_second_key_added_to_the_file_is_refused(tmp_path, keys, https):
    (armored, fingerprint), (other, other_fingerprint) = keys
    proc = install(https, armored + other, fingerprint)
    assert proc.returncode == 1
    assert f"'{fingerprint} {other_fingerprint}'" in proc.stderr
    assert not (tmp_path / "keyrings").exists()


def test_a_key_over_plain_http_or_a_redirect_to_it_is_not_fetched(tmp_path, keys, https):
    (armored, fingerprint), _ = keys
    plain = FileServer(tmp_path / "www", "127.0.0.1")
    try:
        proc = install(https, armored, fingerprint, url=f"{plain.url}/key.asc")
        assert proc.returncode != 0 and "Protocol \"http\" not supported" in proc.stderr, proc.stderr
        assert not (tmp_path / "keyrings").exists()
        assert plain.requests == []  # curl did not even ask
    finally:
        plain.close()


def test_a_server_whose_certificate_no_trusted_ca_signed_is_refused(tmp_path, keys, https):
    (armored, fingerprint), _ = keys
    other = TestCA(tmp_path / "other-ca")
    proc = install(https, armored, fingerprint)
    assert proc.returncode == 0, proc.stderr  # our CA: trusted
    (tmp_path / "keyrings" / "rocm.gpg").unlink()
    os.replace(other.directory / "ca.crt", tmp_path / "ca" / "ca.crt")  # curl now trusts another CA only
    proc = install(https, armored, fingerprint)
    assert proc.returncode != 0 and "SSL certificate problem" in proc.stderr, proc.stderr
    assert not (tmp_path / "keyrings" / "rocm.gpg").exists()
