"""deploys/checks.py's ROCm, llama.cpp and same-build rows, deploys/report.py's per-host summary, and the verify
suite's fact reader (deploys/verify.py's read_facts)."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import testinfra

from deploys.checks import Report, Row, judge, llama_cpp_row, rocm_row, same_build_row
from deploys.llama_cpp import cmake_flags
from deploys.report import summary, summary_markdown, summary_text, write_summary
from deploys.settings import Settings
from deploys.verify import read_facts
from tests.unit.test_verify_checks import TUNED
from tests.verify.halo import fact_reader

CPU = Settings(llama_cpp_backend="cpu")


def stamp(build_id: str = "0123456789ab-1a2b3c4d", s: Settings = CPU, **changes) -> dict:
    current = {"id": build_id, "commit": "0123456789ab" + "0" * 28, "ref": s.llama_cpp_ref,
               "backend": s.llama_cpp_backend, "flags": cmake_flags(s), "rpc_server": "/x", "server": "/y"}
    return {"current": {**current, **changes}, "ref_commit": None}


def test_rocm_row_follows_the_backend_and_the_source():
    assert rocm_row(None, CPU).verdict == "info"
    assert rocm_row(None, Settings()).verdict == "WARN"
    assert rocm_row("6.4.2", Settings()).verdict == "ok"  # distro: whatever the distribution ships
    assert rocm_row("7.1.1", Settings(rocm_source="amd-repo", rocm_version="7.1")).verdict == "ok"
    row = rocm_row("6.4.2", Settings(rocm_source="amd-repo"))
    assert row.verdict == "FAIL" and "rocm_version is 7.2.1" in row.why


def test_llama_cpp_row_wants_the_ref_backend_and_flags_of_the_data():
    assert llama_cpp_row(stamp(), CPU).verdict == "ok"
    assert llama_cpp_row({"current": None, "ref_commit": None}, CPU).verdict == "WARN"
    row = llama_cpp_row(stamp(ref="b1"), CPU)
    assert row.verdict == "FAIL" and "ref 'b1', wanted 'b10760'" in row.why
    assert llama_cpp_row(stamp(), Settings()).verdict == "FAIL"  # a cpu build where hip is wanted


def test_same_build_row_compares_with_the_head_else_the_most_hosts():
    builds = {"halo1": stamp("a"), "halo2": stamp("b"), "halo3": stamp("b")}
    assert same_build_row("halo1", builds, ["halo1"]).verdict == "ok"
    row = same_build_row("halo2", builds, ["halo1"])
    assert row.verdict == "FAIL" and "halo1 (head) serves build a" in row.why
    assert same_build_row("halo1", builds, []).verdict == "FAIL"  # b is on most hosts
    assert same_build_row("halo2", {"halo2": stamp("b"), "halo3": None}, []) is None


def test_judge_adds_the_llama_cpp_row_only_when_read():
    assert "llama.cpp" not in [r.subject for r in judge(TUNED, CPU).rows]
    row = judge(replace(TUNED, llama_cpp=stamp()), CPU).rows[-1]
    assert (row.subject, row.verdict) == ("llama.cpp", "ok")


def test_summary_has_one_line_per_host_with_pass_or_fail(tmp_path):
    good = judge(replace(TUNED, llama_cpp=stamp()), CPU)
    good.host = "halo1"
    bad = Report("halo2", [Row("GTT", "15.50 GiB (wanted 120 GiB: ...)", "FAIL", "kernel too old"),
                           Row("kernel", "6.17.0", "WARN", "older than 6.18.4")])
    entries = summary([good, bad])
    assert [(e["host"], e["result"]) for e in entries] == [("halo1", "PASS"), ("halo2", "FAIL")]
    assert entries[0]["cells"]["GTT"] == {"value": "120.00 GiB", "verdict": "ok"}
    assert entries[0]["cells"]["llama.cpp build"]["value"] == "0123456789ab-1a2b3c4d"
    assert entries[1]["cells"]["pages_limit"] == {"value": "-", "verdict": "-"}
    assert summary([good], {"halo1": "FAIL"})[0]["result"] == "FAIL"  # the pytest outcome wins

    text = summary_text(entries).splitlines()
    assert text[0].split()[:3] == ["host", "GTT", "VRAM"] and text[0].endswith("result")
    assert text[2].startswith("halo2  15.50 GiB FAIL") and text[2].endswith("FAIL")
    markdown = summary_markdown(entries)
    assert "| halo2 | 15.50 GiB FAIL |" in markdown
    assert "- halo2: GTT FAIL 15.50 GiB (wanted 120 GiB: ...): kernel too old" in markdown

    write_summary(str(tmp_path / "r.md"), entries)
    assert (tmp_path / "r.md").read_text() == markdown
    write_summary(str(tmp_path / "r.json"), entries)
    assert json.loads((tmp_path / "r.json").read_text())["hosts"][1]["rows"][0]["why"] == "kernel too old"


def test_the_suite_reads_facts_through_testinfra_with_their_own_commands():
    facts = read_facts(CPU, fact_reader(testinfra.get_host("local://")))
    assert facts.kernel["release"] == os.uname().release
    assert facts.llama_cpp == {"current": None, "ref_commit": None}  # no /opt/llama.cpp here
    assert isinstance(facts.mem_total, int) and facts.mem_total > 0


RPC = {"ports": {50052: "halo-rpc@50052.service"},
       "units": {"halo-rpc@50052.service": {"active": "active", "enabled": "enabled"}},
       "listeners": [{"address": "10.151.0.12", "port": 50052}, {"address": "0.0.0.0", "port": 22}]}
WORKER = Settings(rpc_bind_address="10.151.0.12")


def test_rpc_row_wants_active_units_listening_on_the_bind_address():
    from deploys.checks import rpc_row

    assert (rpc_row(RPC, WORKER).verdict, rpc_row(RPC, WORKER).value) == ("ok", "10.151.0.12:50052")
    stopped = {**RPC, "units": {"halo-rpc@50052.service": {"active": "failed", "enabled": "enabled"}}, "listeners": []}
    row = rpc_row(stopped, WORKER)
    assert row.verdict == "FAIL"
    assert row.why.startswith("halo-rpc@50052.service is failed and enabled; nothing listens on 10.151.0.12:50052")
    everywhere = {**RPC, "listeners": [{"address": "0.0.0.0", "port": 50052}]}
    assert "nothing listens on 10.151.0.12:50052" in rpc_row(everywhere, WORKER).why  # not on every address
    assert rpc_row({**RPC, "units": {}}, WORKER).verdict == "WARN"  # not deployed yet


def test_head_row_wants_health_200():
    from deploys.checks import head_row

    head = {"unit": "halo-llama-server.service", "state": {"active": "active", "enabled": "enabled"},
            "url": "http://10.151.0.11:8080/health", "health": 200}
    assert head_row(head) == Row("head", "/health 200")
    row = head_row({**head, "health": 503})
    assert (row.verdict, row.value) == ("FAIL", "/health 503") and "model loads" in row.why
    assert head_row({**head, "health": None, "state": None}).verdict == "WARN"
