"""llama.cpp: the wanted build serves, and it is one build on every host (RPC needs one protocol)."""

from __future__ import annotations

from tests.verify.halo import assert_row, check, same_build


def test_llama_cpp_build_is_the_wanted_one(halo):
    assert_row(halo, "llama.cpp", accept=("ok",))


def test_llama_cpp_build_is_the_same_on_every_host(halo, builds):
    row = same_build(halo, builds)
    check(row is None or row.verdict == "ok", f"{halo.name}: llama.cpp build {row and row.value}: {row and row.why}")
