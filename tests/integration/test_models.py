"""Split models on the lab cluster: every part downloaded and checked against its own sha256, an
interrupted transfer resumed, a wrong sha256 on one part refused with that part named and nothing
half-written left or served. The parts come from a file server on the lab bridge (lab/http_files.py);
they are the tiny model split by the gguf package's writer (the lab's llama.cpp build has no gguf-split)."""

from __future__ import annotations

import hashlib
import json
import secrets

from lab import lab
from lab.http_files import FileServer
from lab.tiny_model import write_tiny_split
from tests.integration.conftest import assert_no_changes
from tests.integration.test_head import UNIT, env_file, http, sh

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


def test_a_gated_hugging_face_file_downloads_with_a_token_that_stays_out_of_sight(cluster, tmp_path):
    """model_files entries as {"hf": "owner/repo/path"}: the lab file server plays the hub (model_hf_endpoint)
    and answers 401 without the token."""
    hub = tmp_path / "hub"
    (hub / "halo/tiny-GGUF/resolve/main/F16").mkdir(parents=True)
    model = write_tiny_split(tmp_path / "split", parts=2)
    for p in model:
        (hub / "halo/tiny-GGUF/resolve/main/F16" / p.name).write_bytes(p.read_bytes())
    server = FileServer(hub, f"{lab.SUBNET}.1")
    server.token = token = "hf_" + secrets.token_hex(16)
    token_file = "/root/hf-token"
    files = [{"hf": f"halo/tiny-GGUF/F16/{p.name}", "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in model]
    data = {"model_url": "null", "model_sha256": "null", "model_files": json.dumps(files),
            "model_hf_endpoint": server.url, "model_hf_token_file": token_file}
    sh(f"umask 022; printf '%s\\n' {token} > {token_file}")  # readable by all: refused before any change
    try:
        loose = cluster.run("deploys/head.py", **data)
        assert loose.returncode != 0
        assert "model_hf_token_file = '/root/hf-token' is invalid: others may read it" in loose.stdout + loose.stderr
        assert not [r for r in server.requests]  # nothing was asked
        sh(f"chmod 600 {token_file}")
        run = cluster.run("deploys/head.py", **data)
        output = run.stdout + run.stderr
        assert run.returncode == 0, output
        assert [(m, p) for m, p, _ in server.requests if m == "GET"] == [
            ("GET", f"/halo/tiny-GGUF/resolve/main/F16/{p.name}") for p in model]
        assert env_file()["LLAMA_ARG_MODEL"] == f"{MODELS}/{model[0].name}"
        assert http("/health")[0] == 200
        assert token not in output
        assert sh(f"grep -rlF {token} /var/lib/halo-provision /etc/halo-provision /etc/systemd || true") == ""
        assert sh(f"journalctl --no-pager -o cat | grep -cF {token} || true") == "0"  # (the journal is not all UTF-8)
    finally:
        server.close()
        sh(f"rm -f {token_file} {MODELS}/tiny-0000?-of-00002.gguf*")
        restored = cluster.run("deploys/head.py")
        assert restored.returncode == 0, restored.stdout + restored.stderr
