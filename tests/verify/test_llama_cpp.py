"""llama.cpp: the wanted build serves, and it is one build on every host (RPC needs one protocol)."""

from __future__ import annotations

import pytest

from tests.verify.halo import assert_row, check, same_build


def test_llama_cpp_build_is_the_wanted_one(halo):
    assert_row(halo, "llama.cpp", accept=("ok",))


def test_llama_cpp_build_is_the_same_on_every_host(halo, builds):
    row = same_build(halo, builds)
    check(row is None or row.verdict == "ok", f"{halo.name}: llama.cpp build {row and row.value}: {row and row.why}")


def test_the_running_servers_run_the_current_build(halo):
    """Each RPC server and llama-server of this host runs the build `current` points at (a process
    keeps the build it started with until it restarts)."""
    found = [r for r in halo.report.rows if r.subject == "running build"]
    if not found:
        pytest.skip(f"no RPC server or llama-server of ours runs on {halo.name}")
    check(found[0].verdict == "ok", f"{halo.name}: running build {found[0].value}: {found[0].why}")
