"""llama-server on the head: healthy, serving the model."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from deploys import head
from deploys.checks import cluster_build_row
from tests.verify.halo import check

pytestmark = pytest.mark.hosts_in("head")


def test_head_health_is_200(halo):
    row = halo.row("head")
    journal = "" if row.verdict == "ok" else halo.host.run(
        f"journalctl -u {head.UNIT} -n 15 --no-pager -o short-iso").stdout.rstrip()
    check(row.verdict == "ok", f"{halo.name}: head {row.value}: {row.why}\njournalctl -u {head.UNIT}:\n{journal}")


def test_head_lists_the_model(halo):
    s = halo.settings
    url = head.health_url(s).removesuffix("/health") + "/v1/models"
    key = f'k=$(head -n1 {shlex.quote(s.head_api_key_file)}); ' if s.head_api_key_file else "k=; "
    result = halo.host.run(key + f'curl -s -m 10 ${{k:+-H "Authorization: Bearer $k"}} {shlex.quote(url)}')
    try:
        ids = [m.get("id", "") for m in json.loads(result.stdout).get("data", [])]
    except (ValueError, AttributeError):
        ids = None
    check(ids is not None, f"{halo.name}: GET {url} did not answer JSON: {result.stdout[:300]!r} {result.stderr[:300]}")
    wanted = head.model_file(s)
    check(any(i == wanted or Path(i).name == Path(wanted).name for i in ids),
          f"{halo.name}: /v1/models lists {ids}, not the model {wanted}: run deploys/head.py")


def not_failed(halo, subject: str) -> None:
    """Verify's row `subject` of a head that uses RPC servers is not FAIL (skip: it uses none)."""
    found = [r for r in halo.report.rows if r.subject == subject]
    if not found:
        pytest.skip(f"{halo.name} uses no RPC server")
    row = found[0]
    check(row.verdict != "FAIL", f"{halo.name}: {subject} {row.verdict}: {row.value}: {row.why}")


def test_only_llama_server_on_the_head_reaches_the_rpc_servers(halo):
    """The head's egress rule: llama-server's user connects to every RPC server it uses, no other user to any."""
    not_failed(halo, "RPC reach")


def test_the_head_is_connected_to_every_rpc_server_of_the_inventory(halo):
    """llama-server's established connections (read on the head) to each server of its --rpc list."""
    not_failed(halo, "RPC links")


def test_the_head_and_its_rpc_servers_run_one_build_and_protocol(halo, host_facts):
    """The running llama-server and every running RPC server it uses: one build, one RPC protocol version."""
    row = cluster_build_row(halo.settings, host_facts, halo.cluster.workers)
    if row is None:
        pytest.skip(f"llama-server does not run on {halo.name}, or none of its RPC servers is among --hosts")
    halo.record(row)
    check(row.verdict == "ok", f"{halo.name}: cluster build {row.value}: {row.why}")
