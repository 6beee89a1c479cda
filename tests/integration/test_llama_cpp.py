"""deploys/llama_cpp.py on the lab cluster: one build copied everywhere, no-op reruns, failed builds."""

import json
from pathlib import Path

from tests.integration.conftest import assert_no_changes
from lab import lab
from lab.llama_source import TAG, git, llama_repo, serve


def stamps(cluster) -> dict[str, dict]:
    found = {}
    for host in cluster.hosts:
        out = lab.ssh(host, "cat /opt/llama.cpp/current/halo-build.json && /opt/llama.cpp/current/bin/llama-server "
                      "--version 2>&1 | head -n 1")
        text, _, version = out.stdout.rpartition("}")
        found[host.name] = {**json.loads(text + "}"), "version": version.strip()}
    return found


def test_every_host_runs_the_same_build_of_the_pinned_commit(cluster):
    built = stamps(cluster)
    commit = git("rev-parse", f"{TAG}^{{commit}}", cwd=llama_repo()).strip()
    assert {s["id"] for s in built.values()} == {built["halo1"]["id"]}
    assert all(s["commit"] == commit and s["backend"] == "cpu" for s in built.values())
    assert all(s["rpc_server"].endswith("/bin/ggml-rpc-server") for s in built.values())
    assert all(s["version"].startswith("version:") for s in built.values()), built


def test_a_second_run_changes_nothing(cluster):
    assert_no_changes(cluster.run("deploys/llama_cpp.py"))


def test_a_bad_ref_fails_and_the_previous_build_keeps_serving(cluster):
    before = stamps(cluster)
    proc = cluster.run("deploys/llama_cpp.py", llama_cpp_ref="no-such-tag")
    assert proc.returncode != 0
    assert "llama_cpp_ref no-such-tag is not a tag or commit" in proc.stdout + proc.stderr
    assert stamps(cluster) == before


def test_a_compile_error_fails_and_the_previous_build_keeps_serving(cluster, tmp_path: Path):
    broken = tmp_path / "llama.cpp-broken.git"
    work = tmp_path / "work"
    git("clone", "-q", str(llama_repo()), str(work), cwd=tmp_path)
    source = work / "tools/rpc/rpc-server.cpp"
    source.write_text(source.read_text() + "\nthis is not C++;\n")
    git("commit", "-q", "-am", "break the RPC server", cwd=work)
    git("tag", "lab-broken", cwd=work)
    git("clone", "-q", "--bare", str(work), str(broken), cwd=tmp_path)
    git("update-server-info", cwd=broken)
    server, port = serve(tmp_path, f"{lab.SUBNET}.1")
    before = stamps(cluster)
    try:
        proc = cluster.run("deploys/llama_cpp.py", llama_cpp_ref="lab-broken",
                           llama_cpp_repo=f"http://{lab.SUBNET}.1:{port}/{broken.name}")
    finally:
        server.shutdown()
    assert proc.returncode != 0
    assert "rpc-server.cpp" in proc.stdout + proc.stderr
    assert stamps(cluster) == before
    assert_no_changes(cluster.run("deploys/llama_cpp.py"))  # back on the pinned ref: nothing to do
