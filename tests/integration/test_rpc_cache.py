"""The RPC tensor cache stays within rpc_cache_max_mib on a lab worker, across restarts, and can be off.

llama.cpp caches only tensors above 10 MiB, more than the tiny model has, so the cache is filled here
with files as the RPC server names them (content hashes), owned by its user, used at different times;
the unit, its prune before start and after stop, and deploys/rpc_worker.py are the real ones."""

from __future__ import annotations

import pytest

from deploys.head import UNIT as HEAD_UNIT
from tests.integration.conftest import assert_no_changes, inventory_with
from lab import lab

WORKER = "halo3"
CACHE = "/var/lib/halo-rpc/rpc"
UNIT = "halo-rpc@50052.service"
MIB = 1024 * 1024


@pytest.fixture
def head_stopped(cluster):
    """The worker's restarts here would end the head's connection to it: the head waits meanwhile."""
    lab.ssh("halo1", f"systemctl stop {HEAD_UNIT}")
    yield
    lab.ssh("halo1", f"systemctl start {HEAD_UNIT}")


def sh(command: str) -> str:
    return lab.ssh(WORKER, command).stdout.strip()


def fill_cache() -> None:
    """Six 1 MiB tensors; the one numbered 5 used last."""
    sh(f"install -d -m 0700 -o llama-rpc -g llama-rpc {CACHE} && for i in 0 1 2 3 4 5; do "
       f"f={CACHE}/$(printf %016x $i); head -c {MIB} /dev/urandom > $f; chown llama-rpc: $f; "
       f"touch -a -d @$((1700000000 + 1000 * i)) $f; done")


def cached() -> list[str]:
    return sorted(sh(f"ls {CACHE}").split())


def server_args() -> list[str]:
    return sh(f"cat /proc/$(systemctl show -p MainPID --value {UNIT})/cmdline | tr '\\0' ' '").split()


def test_a_small_cap_keeps_the_most_recent_tensors_across_restarts_and_zero_turns_the_cache_off(
        cluster, head_stopped, tmp_path):
    def run(cap: int):
        return cluster.run("deploys/rpc_worker.py", inventory=inventory_with(tmp_path, **{WORKER: {"rpc_cache_max_mib": cap}}))

    try:
        fill_cache()
        capped = run(3)
        assert capped.returncode == 0, capped.stdout + capped.stderr
        assert cached() == [f"{i:016x}" for i in (4, 5)]  # the newest that fit in 3 MiB with the directory
        assert int(sh(f"du -sb {CACHE}").split()[0]) <= 3 * MIB
        assert "-c" in server_args()

        fill_cache()  # the server wrote more meanwhile: a restart prunes again
        sh(f"systemctl restart {UNIT}")
        assert cached() == [f"{i:016x}" for i in (4, 5)]
        assert_no_changes(run(3))

        off = run(0)
        assert off.returncode == 0, off.stdout + off.stderr
        assert cached() == [] and "-c" not in server_args()
    finally:
        restored = cluster.run("deploys/rpc_worker.py")
        assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "-c" in server_args()
