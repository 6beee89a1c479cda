"""Faults on the lab cluster after deploys/full.py: the head starts while a worker's RPC server is down
(as after a power cut, when the head boots first), and a worker's RPC server restarts under a serving head."""

from __future__ import annotations

import time

from tests.integration.conftest import assert_no_changes
from lab import lab

HEAD, WORKER = "halo1", "halo2"
HEAD_UNIT, RPC_UNIT = "halo-llama-server.service", "halo-rpc@50052.service"


def head_state() -> tuple[int, int]:
    """(NRestarts of llama-server's unit, the HTTP status of /health; 0 when nothing answers)."""
    address = lab.running_host(HEAD).address
    out = lab.ssh(HEAD, f"systemctl show -p NRestarts --value {HEAD_UNIT}; "
                        f"curl -s -o /dev/null -m 5 -w '%{{http_code}}' http://{address}:8080/health; true").stdout
    restarts, status = out.split()
    return int(restarts), int(status)


def wait_for(condition, timeout: float = 90) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while not condition(state := head_state()):
        assert time.monotonic() < deadline, f"llama-server (restarts, /health): {state}"
        time.sleep(1)
    return state


def unit_state() -> str:
    return lab.ssh(HEAD, f"systemctl show -p ActiveState --value {HEAD_UNIT}; "
                         f"systemctl show -p SubState --value {HEAD_UNIT}").stdout.strip().replace("\n", "/")


def completes() -> bool:
    """A completion of 4 tokens from the head, asked on the head."""
    address = lab.running_host(HEAD).address
    answer = lab.ssh(HEAD, f"curl -s -m 60 -d '{{\"prompt\": \"x\", \"n_predict\": 4}}' "
                           f"http://{address}:8080/completion", check=False)
    return '"tokens_predicted":4' in answer.stdout.replace(" ", "")


def test_the_head_started_before_a_worker_waits_for_it_and_serves_once_it_is_up(cluster):
    worker = f"{lab.running_host(WORKER).address}:50052"
    lab.ssh(WORKER, f"systemctl stop {RPC_UNIT}")
    try:
        since = lab.ssh(HEAD, "date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
        lab.ssh(HEAD, f"systemctl restart --no-block {HEAD_UNIT}")
        time.sleep(6)
        # llama-server is not started while the worker is down: its unit waits before it, no crash loop
        assert unit_state() == "activating/start-pre"
        journal = lab.ssh(HEAD, f"journalctl -u {HEAD_UNIT} --since '{since}' --no-pager -o cat").stdout
        assert f"waiting for RPC servers to accept connections: {worker}" in journal, journal
        assert "Failed to connect" not in journal and "llama server listening" not in journal, journal

        proc = cluster.run("deploys/head.py", head_ready_timeout_s="10")  # the step explains what it sees
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0, output
        assert "llama-server is not ready" in output, output
        assert f"waiting for RPC servers to accept connections: {worker}" in output, output  # its journal
    finally:
        lab.ssh(WORKER, f"systemctl start {RPC_UNIT}")
    started = time.monotonic()
    wait_for(lambda state: state[1] == 200, timeout=60)  # the wait sees the worker, llama-server starts
    print(f"llama-server answered /health 200 {time.monotonic() - started:.0f} s after the worker started")
    assert completes()
    assert_no_changes(cluster.run("deploys/head.py"))


def test_a_worker_restart_under_a_serving_head_is_survived_with_no_action(cluster):
    """llama.cpp's RPC client does not reconnect: llama-server aborts at its next use of the worker,
    systemd starts it again, and it serves again, all by itself."""
    assert completes()
    restarts, _ = head_state()
    lab.ssh(WORKER, f"systemctl restart {RPC_UNIT}")
    started = time.monotonic()
    while not completes():
        assert time.monotonic() - started < 120, f"the head does not complete again: {head_state()}"
        time.sleep(0.5)
    print(f"the head completed a request again {time.monotonic() - started:.1f} s after the worker restarted")
    assert head_state()[0] > restarts  # it was llama-server that died and came back, not a lucky request
    assert_no_changes(cluster.run("deploys/head.py"))
