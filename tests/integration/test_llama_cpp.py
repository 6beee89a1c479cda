"""deploys/llama_cpp.py on the lab cluster: one build copied everywhere, no-op reruns, failed builds and copies."""

import json
import time
from pathlib import Path

from lab import lab
from lab.llama_source import NEXT_TAG, TAG, git, llama_repo, serve, upgrade_repo
from tests.integration.conftest import assert_no_changes, inventory_with
from tests.integration.test_cluster_faults import completes


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


HEAD_HOST = "halo1"


def test_a_copy_that_fails_on_one_host_leaves_every_host_serving_the_old_build(cluster, tmp_path: Path):
    """The next ref builds on halo1 and is copied to halo2, but not to halo3 (its prefix cannot be made:
    a file is in the way): no host moves `current`, the new build stays staged as `next`, and the
    cluster keeps serving the old build."""
    repo = upgrade_repo(tmp_path)
    server, port = serve(tmp_path, f"{lab.SUBNET}.1")
    blocked = "/opt/llama.cpp-blocked"
    inventory = inventory_with(tmp_path, halo3={"llama_cpp_prefix": blocked})
    before = stamps(cluster)
    lab.ssh("halo3", f"touch {blocked}")
    try:
        proc = cluster.run("deploys/full.py", inventory=inventory, llama_cpp_ref=NEXT_TAG,
                           llama_cpp_repo=f"http://{lab.SUBNET}.1:{port}/{repo.name}")
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0, output
        assert "the new llama.cpp build stays staged in /opt/llama.cpp/next and is not served: halo3 did not get " \
               "it in this run" in output
        staged = {name: lab.ssh(name, "readlink /opt/llama.cpp/next", check=False).stdout.strip()
                  for name in ("halo1", "halo2")}
        assert len(set(staged.values())) == 1 and staged["halo1"].startswith("builds/")
        assert staged["halo1"] != f"builds/{before['halo1']['id']}"
        assert stamps(cluster) == before
        deadline = time.monotonic() + 60  # the head still serves, through every worker, on the old build
        while not completes():
            assert time.monotonic() < deadline, lab.ssh(HEAD_HOST, "journalctl -u halo-llama-server -n 30 --no-pager "
                                                                   "-o cat", check=False).stdout
            time.sleep(2)
    finally:
        server.shutdown()
        lab.ssh("halo3", f"rm -f {blocked}")
        for name in ("halo1", "halo2"):
            lab.ssh(name, "rm -f /opt/llama.cpp/next")


def running_builds() -> dict[str, set[str]]:
    """{host: build ids of its running halo-rpc@ and llama-server executables}."""
    found = {}
    for name in ("halo1", "halo2", "halo3"):
        out = lab.ssh(name, "for u in $(systemctl list-units --plain --no-legend 'halo-rpc@*' "
                            "halo-llama-server.service | awk '{print $1}'); do pid=$(systemctl show -p MainPID "
                            "--value $u); readlink /proc/$pid/exe | sed -n 's|.*/builds/\\([^/]*\\)/bin/.*|\\1|p'; done")
        found[name] = set(out.stdout.split())
    return found


def test_a_new_ref_is_served_by_every_host_after_one_run_with_no_restart_by_systemd(cluster, tmp_path: Path):
    """full.py with the next ref: every host's `current`, RPC servers and llama-server are on its build
    after one run; llama-server was stopped for the RPC servers' switch and started by the run, not
    restarted by systemd after an abort; a second run changes nothing; back on the lab tag after."""
    repo = upgrade_repo(tmp_path)
    server, port = serve(tmp_path, f"{lab.SUBNET}.1")
    upgrade = {"llama_cpp_ref": NEXT_TAG, "llama_cpp_repo": f"http://{lab.SUBNET}.1:{port}/{repo.name}"}
    before = stamps(cluster)
    restarts = lab.ssh(HEAD_HOST, "systemctl show -p NRestarts --value halo-llama-server").stdout.strip()
    try:
        proc = cluster.run("deploys/full.py", **upgrade)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        after = stamps(cluster)
        new = after["halo1"]["id"]
        assert new != before["halo1"]["id"] and {s["id"] for s in after.values()} == {new}
        assert running_builds() == {"halo1": {new}, "halo2": {new}, "halo3": {new}}
        assert lab.ssh(HEAD_HOST, "systemctl show -p NRestarts --value halo-llama-server").stdout.strip() == restarts
        assert completes()
        assert_no_changes(cluster.run("deploys/full.py", **upgrade))
    finally:
        back = cluster.run("deploys/full.py")
        server.shutdown()
    assert back.returncode == 0, back.stdout + back.stderr
    assert {s["id"] for s in stamps(cluster).values()} == {before["halo1"]["id"]}
