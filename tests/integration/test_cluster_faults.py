"""Faults on the lab cluster after deploys/full.py: the head starts while a worker's RPC server is down
(as after a power cut, when the head boots first)."""

from __future__ import annotations

import time

from tests.integration.conftest import assert_no_changes
from tests.lab import lab

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
        time.sleep(2)
    return state


def test_the_head_started_before_a_worker_serves_once_the_worker_is_up(cluster):
    worker = f"{lab.running_host(WORKER).address}:50052"
    lab.ssh(WORKER, f"systemctl stop {RPC_UNIT}")
    try:
        lab.ssh(HEAD, f"systemctl restart {HEAD_UNIT}")
        restarts, _ = head_state()
        wait_for(lambda state: state[0] > restarts and state[1] != 200)  # it exits, systemd starts it again

        proc = cluster.run("deploys/head.py")  # the step explains what it sees
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0, output
        assert "llama-server exited and systemd is about to restart it" in output, output
        assert f"Failed to connect to {worker}" in output, output
    finally:
        lab.ssh(WORKER, f"systemctl start {RPC_UNIT}")
    started = time.monotonic()
    wait_for(lambda state: state[1] == 200)  # the next automatic start finds the worker
    print(f"llama-server answered /health 200 {time.monotonic() - started:.0f} s after the worker started")
    assert_no_changes(cluster.run("deploys/head.py"))
