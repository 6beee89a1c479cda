"""Split models on the lab cluster: every part downloaded and checked against its own sha256, an
interrupted transfer resumed, a wrong sha256 on one part refused with that part named and nothing
half-written left or served. The parts come from a file server on the lab bridge (tests/lab/http_files.py);
they are the tiny model split by the gguf package's writer (the lab's llama.cpp build has no gguf-split)."""

from __future__ import annotations

import hashlib
import json

from tests.integration.conftest import assert_no_changes
from tests.integration.test_head import UNIT, env_file, http, sh
from tests.integration.tiny_model import write_tiny_split
from tests.lab import lab
from tests.lab.http_files import FileServer

MODELS = "/var/lib/halo-provision/models"


def test_a_split_model_downloads_resumes_and_serves_and_a_bad_part_is_refused(cluster, tmp_path):
    parts = write_tiny_split(tmp_path / "split")
    server = FileServer(tmp_path / "split", f"{lab.SUBNET}.1")
    files = [{"url": f"{server.url}/{p.name}", "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in parts]
    split = {"model_url": "null", "model_sha256": "null"}
    before = env_file()["LLAMA_ARG_MODEL"]
    pid = sh(f"systemctl show -p MainPID --value {UNIT}")
    try:
        wrong = [*files[:2], {**files[2], "sha256": "e" * 64}]
        bad = cluster.run("deploys/head.py", model_files=json.dumps(wrong), **split)
        output = bad.stdout + bad.stderr
        assert bad.returncode != 0, output
        assert (f"model_files[2].sha256 mismatch: {files[2]['url']} has sha256 {files[2]['sha256']}, expected "
                f"{'e' * 64}; the download was deleted") in output
        assert sorted(sh(f"ls {MODELS}").split()) == sorted(
            ["tiny.gguf", "tiny.gguf.sha256", parts[0].name, parts[0].name + ".sha256", parts[1].name,
             parts[1].name + ".sha256"])  # the good parts stay (checked); of the bad one nothing
        assert env_file()["LLAMA_ARG_MODEL"] == before and sh(f"systemctl show -p MainPID --value {UNIT}") == pid

        server.requests.clear()
        server.cut_once(parts[2].name, 300_000)  # the transfer breaks off after 300000 bytes
        good = cluster.run("deploys/head.py", model_files=json.dumps(files), **split)
        assert good.returncode == 0, good.stdout + good.stderr
        gets = [(path, rng) for method, path, rng in server.requests if method == "GET"]
        assert gets == [(f"/{parts[2].name}", None), (f"/{parts[2].name}", "bytes=300000-")]  # resumed, not restarted
        assert env_file()["LLAMA_ARG_MODEL"] == f"{MODELS}/{parts[0].name}"
        for p in parts:
            assert sh(f"sha256sum {MODELS}/{p.name}").split()[0] == hashlib.sha256(p.read_bytes()).hexdigest()
        status, text = http("/completion", {"prompt": "split", "n_predict": 4, "temperature": 0})
        assert status == 200 and json.loads(text)["tokens_predicted"] > 0, text
        assert_no_changes(cluster.run("deploys/head.py", model_files=json.dumps(files), **split))
    finally:
        server.close()
        restored = cluster.run("deploys/head.py")
        assert restored.returncode == 0, restored.stdout + restored.stderr
        sh(f"rm -f {MODELS}/tiny-0000?-of-00003.gguf*")
    assert env_file()["LLAMA_ARG_MODEL"] == before
