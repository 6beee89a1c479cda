"""deploys/head.py on the lab cluster (after deploys/full.py): llama-server serves the tiny model with
its layers on the RPC workers, changes nothing on a second run, refuses a download with the wrong
sha256, reports a model that does not load, and keeps the API key out of sight."""

from __future__ import annotations

import json
import re
import secrets
import shlex

import pytest

from tests.integration.conftest import assert_no_changes
from lab import lab

HEAD = "halo1"
PORT = 8080
RPC_PORT = 50052
UNIT = "halo-llama-server.service"
ENV_FILE = "/etc/halo-provision/llama-server.env"


def address(name: str) -> str:
    return next(h.address for h in lab.load_hosts() if h.name == name)


def sh(command: str, name: str = HEAD) -> str:
    return lab.ssh(name, command).stdout.strip()


def http(path: str, body: dict | None = None, key: str | None = None) -> tuple[int, str]:
    """(status, body) of a request from the head to its llama-server, with curl."""
    args = ["curl", "-s", "-m", "60", "-w", r"\n%{http_code}"]
    if key:
        args += ["-H", f"Authorization: Bearer {key}"]  # on the head's command line: tests only
    if body is not None:
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    out = sh(shlex.join(args + [f"http://{address(HEAD)}:{PORT}{path}"]))
    text, _, code = out.rpartition("\n")
    return int(code), text


def env_file() -> dict[str, str]:
    """llama-server's env file as systemd reads it: values in double quotes, a backslash before " \\ ` $."""
    lines = sh(f"cat {ENV_FILE}").splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {k: re.sub(r'\\(["\\`$])', r"\1", v[1:-1]) if len(v) > 1 and v[0] == v[-1] == '"' else v for k, v in pairs}


def journal_of_current_process() -> str:
    """The journal of the running llama-server only (its systemd invocation)."""
    return sh(f"journalctl --no-pager -o cat _SYSTEMD_INVOCATION_ID=$(systemctl show -p InvocationID --value {UNIT})")


def test_llama_server_serves_the_model_from_the_rpc_workers(cluster):
    assert sh(f"systemctl is-active {UNIT}; systemctl is-enabled {UNIT}") == "active\nenabled"
    assert http("/health") == (200, '{"status":"ok"}')

    env = env_file()
    workers = [f"{address(name)}:{RPC_PORT}" for name in ("halo2", "halo3")]  # inventory order, not the head's own
    assert env["LLAMA_ARG_RPC"] == ",".join(workers)
    assert env["LLAMA_ARG_LOAD_MODE"] == "dio"  # the lab's build knows --load-mode
    assert sh(f"stat -c '%U %a' {ENV_FILE}") == "root 600"

    pid = sh(f"systemctl show -p MainPID --value {UNIT}")
    user, groups = sh(f"ps -o user:32=,supgrp:200= -p {pid}").split(None, 1)
    assert user == "llama-server" and {"render", "video"} <= set(groups.split(","))
    environ = sh(f"tr '\\0' '\\n' < /proc/{pid}/environ")
    assert f"LLAMA_ARG_RPC={','.join(workers)}" in environ.splitlines()

    status, text = http("/v1/models")
    assert status == 200
    assert [m["id"] for m in json.loads(text)["data"]] == [env["LLAMA_ARG_MODEL"]]

    status, text = http("/completion", {"prompt": "The cluster says", "n_predict": 8, "temperature": 0})
    assert status == 200, text
    answer = json.loads(text)
    assert answer["tokens_predicted"] > 0 and answer["content"]

    # every worker holds part of the model; the head's own RPC server holds nothing
    journal = journal_of_current_process()
    for worker in workers:
        assert re.search(rf"RPC\d+\[{re.escape(worker)}\] model buffer size = +[0-9.]+ MiB", journal), journal
    assert f"[{address(HEAD)}:{RPC_PORT}]" not in journal


def test_second_run_changes_nothing(cluster):
    assert_no_changes(cluster.run("deploys/head.py"))


def test_a_download_with_the_wrong_sha256_is_refused_and_the_model_kept(cluster):
    if "model_url" not in cluster.data:
        pytest.skip("the cluster serves a model_path, no download")
    model = env_file()["LLAMA_ARG_MODEL"]
    before = sh(f"sha256sum {model}")
    proc = cluster.run("deploys/head.py", model_sha256="f" * 64)  # (all digits would read as a number)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"model_sha256 mismatch: {cluster.data['model_url']} has sha256 {cluster.data['model_sha256']}" in output
    assert sh(f"sha256sum {model}") == before
    assert sh(f"ls {shlex.quote(model)}.part 2>/dev/null || echo none") == "none"
    assert http("/health")[0] == 200  # llama-server was not touched
    assert_no_changes(cluster.run("deploys/head.py"))


def test_a_model_that_does_not_load_fails_with_the_journal(cluster):
    try:
        proc = cluster.run("deploys/head.py", model_path="/etc/hostname", model_url="null", model_sha256="null")
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0, output
        assert "llama-server is not ready: llama-server exited" in output
        assert "invalid magic characters" in output  # llama.cpp's own words, from the journal
    finally:
        restored = cluster.run("deploys/head.py")
        assert restored.returncode == 0, restored.stdout + restored.stderr
    assert http("/health")[0] == 200


def test_api_key_from_a_root_only_file_and_nowhere_else(cluster):
    key = secrets.token_hex(24)
    key_file = "/root/llama-api-key"
    sh(f"umask 077; printf '# the cluster key\\n%s\\n' {key} > {key_file}")
    try:
        first = cluster.run("deploys/head.py", head_api_key_file=key_file)
        output = first.stdout + first.stderr
        assert first.returncode == 0, output
        assert key not in output

        assert http("/v1/models")[0] == 401
        assert http("/completion", {"prompt": "x", "n_predict": 1})[0] == 401
        assert http("/v1/models", key=key)[0] == 200
        assert http("/health")[0] == 200  # open, for load balancers and this step

        assert sh(f"grep -rlF {key} /etc/systemd /etc/halo-provision /var/lib/halo-provision || true") == ""
        processes = lab.ssh(HEAD, "ps -eo args").stdout  # a command line without the key in it
        assert key not in processes and "llama-server" in processes
        assert key not in sh(f"journalctl -u {UNIT} --no-pager -o cat")

        second = cluster.run("deploys/head.py", head_api_key_file=key_file)
        assert key not in second.stdout + second.stderr
        assert_no_changes(second)

        sh(f"chmod 644 {key_file}")
        loose = cluster.run("deploys/head.py", head_api_key_file=key_file)
        assert loose.returncode != 0
        assert f"head_api_key_file = '{key_file}' is owned by root with mode 644" in loose.stdout + loose.stderr
    finally:
        sh(f"rm -f {key_file}")
        restored = cluster.run("deploys/head.py")
        assert restored.returncode == 0, restored.stdout + restored.stderr
    assert http("/v1/models")[0] == 200
