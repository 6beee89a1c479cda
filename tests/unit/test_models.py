"""Unit tests of deploys/models.py: split models in the settings, and the download script run here
with curl against a local server that breaks a transfer off (resume), lies about nothing, and logs."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

from deploys.head import model_file
from deploys.models import download_script
from lab.http_files import FileServer
from tests.unit.test_serving import head, problems

needs_tools = pytest.mark.skipif(not (shutil.which("bash") and shutil.which("curl") and shutil.which("numfmt")),
                                 reason="needs bash, curl and numfmt")
SHA = "ab" * 32
PARTS = [{"url": f"http://10.151.0.1:8000/m/tiny-{i:05d}-of-00003.gguf", "sha256": SHA} for i in (1, 2, 3)]



def test_a_split_model_serves_its_first_part():
    s = head(model_path=None, model_files=PARTS)
    assert model_file(s) == "/var/lib/halo-provision/models/tiny-00001-of-00003.gguf"


@pytest.mark.parametrize("files, words", [
    (PARTS[:2], "model_files = [{'url': 'http://10.151.0.1:8000/m/tiny-00001-of-00003.gguf'"),
    (PARTS[:2], "is invalid: a split in 3 parts needs 3 entries, in order; the list has 2"),
    ([PARTS[1], PARTS[0], PARTS[2]], "entry 1 is 'tiny-00002-of-00003.gguf'; expected tiny-00001-of-00003.gguf"),
    ([{"url": "http://h/a.gguf"}], "expected a list of the parts of a split GGUF model"),
    ([{"url": "ftp://h/a-00001-of-00001.gguf", "sha256": SHA}], "expected a list of the parts"),
    ([{"url": "http://h/a-00001-of-00001.gguf", "sha256": "xyz"}], "expected a list of the parts"),
])
def test_bad_split_models_are_refused(files, words):
    message = problems(model_path=None, model_files=files)
    assert message.startswith("halo1: model_files = ") and words in message, message


def test_model_files_exclude_model_path():
    assert "model_files = " in problems(model_files=PARTS) and "model_path is set too" in problems(model_files=PARTS)


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    server = FileServer(root)
    yield root, server
    server.close()


def run(url: str, sha: str, dest, variable: str = "model_files[1].sha256") -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", download_script(url, sha, str(dest), variable)],
                          capture_output=True, text=True, timeout=120)


@needs_tools
def test_an_interrupted_download_resumes_where_it_stopped(served, tmp_path):
    root, server = served
    data = bytes(range(256)) * 4096  # 1 MiB
    (root / "m-00002-of-00002.gguf").write_bytes(data)
    server.cut_once("m-00002-of-00002.gguf", 300_000)
    dest = tmp_path / "models" / "m-00002-of-00002.gguf"
    dest.parent.mkdir()
    proc = run(f"{server.url}/m-00002-of-00002.gguf", hashlib.sha256(data).hexdigest(), dest)
    assert proc.returncode == 0, proc.stderr
    assert dest.read_bytes() == data
    gets = [r for r in server.requests if r[0] == "GET"]
    assert gets == [("GET", "/m-00002-of-00002.gguf", None), ("GET", "/m-00002-of-00002.gguf", "bytes=300000-")]
    assert "m-00002-of-00002.gguf: resuming at 293KiB (attempt 2)" in proc.stdout


@needs_tools
def test_a_part_left_by_an_earlier_run_is_resumed_and_a_wrong_sha256_names_the_part(served, tmp_path):
    root, server = served
    data = b"GGUF" + bytes(100_000)
    (root / "m.gguf").write_bytes(data)
    dest = tmp_path / "m.gguf"
    (tmp_path / "m.gguf.part").write_bytes(data[:40_000])  # an earlier run was killed here
    bad = run(f"{server.url}/m.gguf", "0" * 64, dest)
    assert bad.returncode == 1
    assert f"model_files[1].sha256 mismatch: {server.url}/m.gguf has sha256 {hashlib.sha256(data).hexdigest()}" in bad.stderr
    assert ("GET", "/m.gguf", "bytes=40000-") in server.requests
    assert sorted(p.name for p in tmp_path.iterdir()) == ["www"]  # nothing half-written stays


@needs_tools
def test_too_little_disk_space_stops_before_downloading(served, tmp_path):
    root, server = served
    (root / "big.gguf").write_bytes(b"x")
    big = tmp_path / "big.gguf"
    script = download_script(f"{server.url}/big.gguf", "0" * 64, str(big))
    bin_dir = tmp_path / "bin"  # a df that finds the file system full
    bin_dir.mkdir()
    (bin_dir / "df").write_text("#!/bin/sh\necho Avail; echo 0\n")
    (bin_dir / "df").chmod(0o755)
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}"))
    assert proc.returncode == 1
    assert f"not enough disk space for big.gguf: 1B still to download, 0B free in {tmp_path}" in proc.stderr
    assert [r[0] for r in server.requests] == ["HEAD"]


@needs_tools
def test_a_slow_download_prints_progress_with_bytes_and_rate(served, tmp_path):
    root, server = served
    data = bytes(200_000)
    (root / "slow.gguf").write_bytes(data)
    server.rate = 60_000  # bytes per second: about 3.3 s
    script = download_script(f"{server.url}/slow.gguf", hashlib.sha256(data).hexdigest(), str(tmp_path / "slow.gguf"),
                             every_s=1)
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    progress = [line for line in proc.stdout.splitlines() if line.startswith("slow.gguf: ") and " of 196KiB at " in line]
    assert len(progress) >= 2, proc.stdout
    assert progress[0].endswith("/s")


def test_hugging_face_entries_expand_to_the_hub_and_need_one_source():
    s = head(model_path=None, model_hf_revision="v1", model_files=[
        {"hf": "unsloth/Tiny-GGUF/Q8_0/tiny-00001-of-00002.gguf", "sha256": SHA},
        {"hf": "unsloth/Tiny-GGUF/Q8_0/tiny-00002-of-00002.gguf", "sha256": SHA}])
    assert model_file(s) == "/var/lib/halo-provision/models/tiny-00001-of-00002.gguf"
    assert "model_files = [{'url': 'http://h/a.gguf', 'hf': 'o/r/a.gguf'" in problems(
        model_path=None, model_files=[{"url": "http://h/a.gguf", "hf": "o/r/a.gguf", "sha256": SHA}])
    assert "expected a list of the parts" in problems(model_path=None, model_files=[{"hf": "o/r/../x.gguf", "sha256": SHA}])


@needs_tools
def test_a_token_from_a_file_reaches_the_server_and_nothing_else(served, tmp_path):
    root, server = served
    (root / "o" / "r" / "resolve" / "main").mkdir(parents=True)
    data = b"GGUF gated"
    (root / "o/r/resolve/main/g.gguf").write_bytes(data)
    token = "hf_" + "x1y2" * 8
    server.token = token
    token_file = tmp_path / "hf-token"
    token_file.write_text(token + "\n")
    url = f"{server.url}/o/r/resolve/main/g.gguf"
    without = run(url, hashlib.sha256(data).hexdigest(), tmp_path / "g.gguf")
    assert without.returncode == 1 and "401" in without.stderr
    script = download_script(url, hashlib.sha256(data).hexdigest(), str(tmp_path / "g.gguf"), token_file=str(token_file))
    assert token not in script
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "g.gguf").read_bytes() == data
    assert token not in proc.stdout + proc.stderr
