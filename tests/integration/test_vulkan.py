"""The Vulkan backend end to end on a real Vulkan driver: Mesa's lavapipe, which runs on the CPU.

Three Debian 13 lab hosts (`VULKAN_HOSTS`) get deploys/full.py with `llama_cpp_backend = "vulkan"`:
llama.cpp is built with GGML_VULKAN=ON once and copied, each worker runs `ggml-rpc-server -d Vulkan0`,
and the head serves a completion with the model's buffers on the workers' RPC devices. ggml-vulkan
skips CPU-type devices such as lavapipe unless GGML_VK_VISIBLE_DEVICES names them, so the workers
get `rpc_env = {"GGML_VK_VISIBLE_DEVICES": "0"}`: without it `-d Vulkan0` names no device and the
servers do not start. The head gets a head_env value that needs systemd's quoting.

Debian 13, not 12: Debian 12's Vulkan headers (1.3.239) lack vk::LayerSettingEXT, which the vendored
ggml-vulkan.cpp uses unconditionally, so it does not compile there.
"""

from __future__ import annotations

import json
import re
import shlex
import time

import pytest

from lab.pyinfra_cli import pyinfra, results
from tests.integration.conftest import Cluster, assert_no_changes
from lab import lab

pytestmark = pytest.mark.slow  # builds ggml-vulkan's shaders: see bench/README.md for the time

VULKAN_HOSTS = ["halo1:13", "halo2:13", "halo3:13"]
HEAD, WORKERS, PORT, RPC_PORT = "halo1", ("halo2", "halo3"), 8080, 50052
UNIT = "halo-llama-server.service"
PROBE = "it's \"quoted\" $HOME \\ # not a comment"  # head_env: every character systemd's quoting handles


def inventory_text(env_value: str = PROBE, halo3_env: dict | None = None) -> str:
    """The lab inventory with the Vulkan RPC servers and environment (halo3_env: halo3's instance env)."""
    text = (lab.STATE / "inventory.py").read_text()
    for name in ("halo1", "halo2", "halo3"):
        entry = f"({name!r}, {{"
        data = {"rpc_instances": [{"port": RPC_PORT, "device": "Vulkan0",
                                   **({"env": halo3_env} if name == "halo3" and halo3_env else {})}],
                "rpc_env": {"GGML_VK_VISIBLE_DEVICES": "0"}}
        if name == HEAD:
            data["head_env"] = {"HALO_PROBE": env_value}
        text = text.replace(entry, entry + ", ".join(f"{k!r}: {v!r}" for k, v in data.items()) + ", ")
    return text


@pytest.fixture(scope="module")
def vulkan_cluster(lab_session, tmp_path_factory):
    from lab.cluster import cluster_inputs

    hosts = lab.ensure(lab.parse_host_args(VULKAN_HOSTS))
    inventory = tmp_path_factory.mktemp("vulkan") / "inventory.py"
    inventory.write_text(inventory_text())
    with cluster_inputs() as data:
        data = {**data, "llama_cpp_backend": "vulkan"}
        start = time.monotonic()
        first = pyinfra(str(inventory), "deploys/full.py", data=data, timeout=7200)  # the first build: long
        print(f"deploys/full.py with the Vulkan backend took {time.monotonic() - start:.0f} s")
        assert first.returncode == 0, f"deploys/full.py (vulkan) failed:\n{first.stdout}\n{first.stderr}"
        yield Cluster(hosts, str(inventory), data, first)


def sh(name: str, command: str) -> str:
    return lab.ssh(name, command, timeout=120).stdout.strip()


def main_pid(name: str, unit: str) -> str:
    return sh(name, f"systemctl show -p MainPID --value {unit}")


def environ(name: str, unit: str) -> dict[str, str]:
    pid = main_pid(name, unit)
    raw = lab.ssh(name, f"cat /proc/{pid}/environ").stdout
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def address(name: str) -> str:
    return next(h.address for h in lab.load_hosts() if h.name == name)


def test_every_host_runs_one_vulkan_build(vulkan_cluster):
    stamps = [json.loads(sh(name, "cat /opt/llama.cpp/current/halo-build.json")) for name in (HEAD, *WORKERS)]
    assert {s["id"] for s in stamps} == {stamps[0]["id"]}
    assert stamps[0]["backend"] == "vulkan" and "-DGGML_VULKAN=ON" in stamps[0]["flags"]


def test_workers_serve_lavapipe_as_vulkan0(vulkan_cluster):
    for name in WORKERS:
        unit = f"halo-rpc@{RPC_PORT}.service"
        assert sh(name, f"systemctl is-active {unit}") == "active"
        pid = main_pid(name, unit)
        assert f"-p {RPC_PORT} -c -d Vulkan0" in sh(name, f"tr '\\0' ' ' < /proc/{pid}/cmdline")
        env = environ(name, unit)
        assert env["GGML_VK_VISIBLE_DEVICES"] == "0"
        assert env["MESA_SHADER_CACHE_DIR"] == "/var/cache/halo-rpc"
        # the process has Mesa's software Vulkan driver loaded: lavapipe is the device it serves
        assert "libvulkan_lvp.so" in sh(name, f"cat /proc/{pid}/maps"), name
        assert sh(name, f"stat -c '%U %a' /etc/halo-provision/rpc-{RPC_PORT}.env") == "root 600"


def test_head_serves_a_completion_from_the_workers_vulkan_devices(vulkan_cluster):
    health = f"curl -s -o /dev/null -w '%{{http_code}}' http://{address(HEAD)}:{PORT}/health"
    assert sh(HEAD, health) == "200"
    body = json.dumps({"prompt": "The cluster says", "n_predict": 8, "temperature": 0})
    answer = json.loads(sh(HEAD, f"curl -s -m 300 -d {shlex.quote(body)} http://{address(HEAD)}:{PORT}/completion"))
    assert answer["tokens_predicted"] > 0 and answer["content"], answer
    invocation = sh(HEAD, f"systemctl show -p InvocationID --value {UNIT}")
    journal = sh(HEAD, f"journalctl --no-pager -o cat _SYSTEMD_INVOCATION_ID={invocation}")
    for name in WORKERS:
        endpoint = f"{address(name)}:{RPC_PORT}"
        assert re.search(rf"RPC\d+\[{re.escape(endpoint)}\] model buffer size = +[0-9.]+ MiB", journal), journal
        # lavapipe compiled ggml's shaders into the cache the unit gives Mesa (the next start reuses them)
        assert "mesa_shader_cache" in sh(name, "ls /var/cache/halo-rpc"), name
    # the head's own build has Vulkan too, but no visible device there: nothing of the model on it
    assert not re.search(r"Vulkan\d+ model buffer size", journal), journal


def test_head_env_reaches_llama_server_exactly(vulkan_cluster):
    env = environ(HEAD, UNIT)
    assert env["HALO_PROBE"] == PROBE
    assert env["MESA_SHADER_CACHE_DIR"] == "/var/cache/halo-llama-server"
    assert sh(HEAD, "stat -c '%U %a' /var/cache/halo-llama-server") == "llama-server 750"


def test_a_second_run_changes_nothing(vulkan_cluster):
    assert_no_changes(pyinfra(vulkan_cluster.inventory, "deploys/full.py", data=vulkan_cluster.data))


def changed(proc) -> dict[str, int]:
    """{operation: on how many hosts it changed something} of a successful run."""
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {op: r["success"] for op, r in results(proc).items() if r["success"]}


def test_changing_the_environment_restarts_only_that_unit(vulkan_cluster, tmp_path):
    """head_env restarts llama-server only; halo3's instance env restarts halo3's RPC server only."""
    rpc_unit = f"halo-rpc@{RPC_PORT}.service"
    workers = {name: main_pid(name, rpc_unit) for name in WORKERS}
    head = main_pid(HEAD, UNIT)
    inventory = tmp_path / "inventory.py"
    inventory.write_text(inventory_text(env_value="second"))
    ops = changed(pyinfra(str(inventory), "deploys/full.py", data=vulkan_cluster.data))
    assert ops and all("llama-server" in op and n == 1 for op, n in ops.items()), ops  # on the head only
    assert main_pid(HEAD, UNIT) != head and environ(HEAD, UNIT)["HALO_PROBE"] == "second"
    assert {name: main_pid(name, rpc_unit) for name in WORKERS} == workers

    inventory.write_text(inventory_text(env_value="second", halo3_env={"GGML_VK_DISABLE_F16": "1"}))
    ops = changed(pyinfra(str(inventory), "deploys/rpc_worker.py", data=vulkan_cluster.data))
    assert ops and all(f"halo-rpc@{RPC_PORT}" in op and n == 1 for op, n in ops.items()), ops  # one host
    assert main_pid("halo2", rpc_unit) == workers["halo2"] and main_pid("halo3", rpc_unit) != workers["halo3"]
    env = environ("halo3", rpc_unit)
    assert (env["GGML_VK_DISABLE_F16"], env["GGML_VK_VISIBLE_DEVICES"]) == ("1", "0")
