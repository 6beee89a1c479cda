"""Unit tests of deploys/head.py: the --rpc list, llama-server's environment, the unit, the checks,
the load-mode probe, and what its operations do for given facts."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from pyinfra.api import FileUploadCommand, FunctionCommand, Inventory
from pyinfra.context import ctx_host

from deploys.head import (
    ENV_FILE,
    download_script,
    env_file_text,
    head_problems,
    health_url,
    model_file,
    private_key_file,
    ready,
    render_unit,
    render_wait_rpc,
    server_env,
    server_env_file,
    serving,
    verified_download,
)
from deploys.settings import HEAD_MANAGED_ENV, Settings, SettingsError, validate_inventory
from deploys.topology import rpc_list as rpc_servers
from deploys.topology import workers_of
from facts.llama_server import HttpStatus, LlamaServerHelp, LlamaServerStatus, help_flags, load_mode_flag
from tests.unit import fake_host
from tests.unit.fake_host import run_operation

HOST_BUILD = Path("/var/cache/halo-src/build-cpu/bin/llama-server")  # the CPU build on the dev machine
SHA = "08f877c472932966e50db374cca570d56a72041e4c5e3a6a9c6a50ba2fdb6d7d"
MODEL = {"model_path": "/srv/models/tiny.gguf"}


def inventory(halo1: dict | None = None, halo2: dict | None = None, workers=("halo1", "halo2", "halo3"),
              heads=("halo1",)) -> Inventory:
    """halo1 head (and worker), halo2/halo3 workers on 10.151.0.0/24, with a model on the head."""
    data = {
        "halo1": {"rpc_bind_address": "10.151.0.11", **MODEL, **(halo1 or {})},
        "halo2": {"rpc_bind_address": "10.151.0.12", **(halo2 or {})},
        "halo3": {"rpc_bind_address": "10.151.0.13"},
    }
    hosts = [(name, {k: v for k, v in values.items() if v is not None}) for name, values in data.items()]
    return Inventory((hosts, {}), head=(list(heads), {}), rpc_workers=(list(workers), {}))


def head_view(inv: Inventory, name: str = "halo1") -> tuple[Settings, list[str]]:
    """The head's settings and its --rpc list, as the step computes them."""
    valid = validate_inventory(inv)
    workers = [valid[h.name] for h in inv.get_group("rpc_workers")]
    return valid[name], rpc_servers(valid[name], workers)


# -- the --rpc list -------------------------------------------------------------------------------


def test_rpc_list_is_every_worker_but_the_head_itself():
    s, rpc = head_view(inventory())
    assert rpc == ["10.151.0.12:50052", "10.151.0.13:50052"]
    assert s.rpc_endpoint not in rpc


def test_rpc_list_follows_the_inventory_order_of_the_hosts():
    _, rpc = head_view(inventory(workers=("halo3", "halo1", "halo2")))  # the group lists them otherwise
    assert rpc == ["10.151.0.12:50052", "10.151.0.13:50052"]
    assert head_view(inventory(workers=("halo3", "halo2", "halo1")))[1] == rpc  # the same every time


def test_rpc_list_of_a_head_that_is_no_worker_has_every_worker():
    _, rpc = head_view(inventory(workers=("halo2", "halo3")))
    assert rpc == ["10.151.0.12:50052", "10.151.0.13:50052"]


def test_rpc_list_has_every_instance_of_a_worker():
    instances = [{"port": 50052, "device": "ROCm0"}, {"port": 50053}]
    _, rpc = head_view(inventory(halo2={"rpc_instances": instances}))
    assert rpc == ["10.151.0.12:50052", "10.151.0.12:50053", "10.151.0.13:50052"]


def test_rpc_list_of_a_lone_head_is_empty_and_has_no_env_variable():
    s, rpc = head_view(inventory(workers=("halo1",)))
    assert rpc == []
    assert "LLAMA_ARG_RPC" not in server_env(s, rpc, "/m.gguf", "--load-mode")


def test_workers_of_reads_the_inventory_group():
    inv = inventory()
    validate_inventory(inv)
    assert [w.host_name for w in workers_of(inv)] == ["halo1", "halo2", "halo3"]


def test_ipv6_workers_get_brackets_and_are_refused_with_the_reason():
    # settings refuse it first, naming the worker whose value is at fault (not the head)
    with pytest.raises(SettingsError) as info:
        head_view(inventory(halo2={"rpc_bind_address": "fd51::12"}))
    (problem,) = info.value.problems
    assert problem.startswith("halo2: rpc_bind_address = 'fd51::12' is invalid: llama.cpp's RPC client on head "
                              "halo1 connects over IPv4 only")
    # the step's own check, for a --rpc list that reaches it
    s, _ = head_view(inventory())
    (problem,) = head_problems(s, ["[fd51::12]:50052", "10.151.0.13:50052"])
    assert problem.startswith("halo1: the --rpc list [fd51::12]:50052 is IPv6")


# -- llama-server's environment ---------------------------------------------------------------------


def test_env_of_the_defaults():
    s, rpc = head_view(inventory())
    assert server_env(s, rpc, "/srv/models/tiny.gguf", "--load-mode") == {
        "LLAMA_ARG_MODEL": "/srv/models/tiny.gguf",
        "LLAMA_ARG_HOST": "10.151.0.11",
        "LLAMA_ARG_PORT": "8080",
        "LLAMA_ARG_N_GPU_LAYERS": "all",
        "LLAMA_ARG_FLASH_ATTN": "on",
        "LLAMA_ARG_CTX_SIZE": "16384",
        "LLAMA_ARG_N_PARALLEL": "1",
        "LLAMA_ARG_CACHE_TYPE_K": "f16",
        "LLAMA_ARG_CACHE_TYPE_V": "f16",
        "LLAMA_ARG_LOG_VERBOSITY": "4",
        "LLAMA_ARG_ENDPOINT_METRICS": "1",
        "LLAMA_ARG_RPC": "10.151.0.12:50052,10.151.0.13:50052",
        "LLAMA_ARG_LOAD_MODE": "dio",
    }


def test_env_of_tuned_settings():
    s, rpc = head_view(inventory(halo1={
        "head_bind_address": "0.0.0.0", "head_port": 8081, "head_gpu_layers": 40, "head_flash_attn": "auto",
        "head_ctx_size": 65536, "head_parallel": 4, "head_cache_type_k": "q8_0", "head_cache_type_v": "q4_0",
        "head_tensor_split": [3, 1.5, 0], "head_metrics": False, "head_log_verbosity": 3,
    }))
    env = server_env(s, rpc, "/m.gguf", "-dio")
    assert env["LLAMA_ARG_HOST"] == "0.0.0.0" and env["LLAMA_ARG_PORT"] == "8081"
    assert env["LLAMA_ARG_N_GPU_LAYERS"] == "40" and env["LLAMA_ARG_FLASH_ATTN"] == "auto"
    assert env["LLAMA_ARG_CTX_SIZE"] == "65536" and env["LLAMA_ARG_N_PARALLEL"] == "4"
    assert (env["LLAMA_ARG_CACHE_TYPE_K"], env["LLAMA_ARG_CACHE_TYPE_V"]) == ("q8_0", "q4_0")
    assert env["LLAMA_ARG_TENSOR_SPLIT"] == "3,1.5,0"
    assert env["LLAMA_ARG_LOG_VERBOSITY"] == "3"
    assert "LLAMA_ARG_ENDPOINT_METRICS" not in env


@pytest.mark.parametrize("flag, expected", [
    ("--load-mode", {"LLAMA_ARG_LOAD_MODE": "dio"}),
    ("-dio", {"LLAMA_ARG_DIO": "1"}),
    (None, {}),
])
def test_env_load_mode_as_the_binary_spells_it(flag, expected):
    s, rpc = head_view(inventory())
    env = server_env(s, rpc, "/m.gguf", flag)
    assert {k: v for k, v in env.items() if k in ("LLAMA_ARG_LOAD_MODE", "LLAMA_ARG_DIO")} == expected


def test_env_file_is_comments_then_one_variable_per_line():
    s, rpc = head_view(inventory(halo1={"head_api_key_file": "/etc/halo-provision/api-key"}))
    text = env_file_text(server_env(s, rpc, "/m.gguf", "-dio"), "-dio")
    lines = text.splitlines()
    assert text.endswith("\n") and lines[0].startswith("# Written by halo-provision")
    assert all(line.startswith("#") or line.startswith("LLAMA_ARG_") for line in lines)
    assert 'LLAMA_ARG_DIO="1"' in lines and "-dio" in lines[1]
    assert "API_KEY" not in text  # the key file reaches llama-server through the unit's credential


def test_head_env_follows_the_llama_arg_lines_quoted_for_systemd():
    s, rpc = head_view(inventory(halo1={"head_env": {"ROCBLAS_USE_HIPBLASLT": "1", "X": 'a "b" $c \\ d'}}))
    text = env_file_text(server_env(s, rpc, "/m.gguf", None), None, s.head_env)
    lines = text.splitlines()
    assert lines[-3:] == ["# head_env, quoted for systemd:", 'ROCBLAS_USE_HIPBLASLT="1"', 'X="a \\"b\\" \\$c \\\\ d"']
    assert lines.index('LLAMA_ARG_PORT="8080"') < lines.index('ROCBLAS_USE_HIPBLASLT="1"')


def test_no_head_env_by_default():
    s, rpc = head_view(inventory())
    assert s.head_env == {} and "head_env" not in env_file_text(server_env(s, rpc, "/m.gguf", None), None, s.head_env)


def test_every_variable_the_step_writes_is_refused_in_head_env():
    s, rpc = head_view(inventory(halo1={"head_tensor_split": [1, 1, 1], "head_extra_args": ["--cache-reuse", "256"]}))
    written = set(server_env(s, rpc, "/m.gguf", "--load-mode")) | set(server_env(s, rpc, "/m.gguf", "-dio"))
    written |= {line.split("=")[1] for line in directives(render_unit(s)) if line.startswith("Environment=")}
    assert written <= set(HEAD_MANAGED_ENV), "add the new variable to HEAD_MANAGED_ENV in deploys/settings/fields.py"
    for name in written:
        with pytest.raises(SettingsError) as info:
            validate_inventory(inventory(halo1={"head_env": {name: "1"}}))
        (problem,) = info.value.problems
        assert problem.startswith("halo1: head_env = {") and f"{name} is set by halo-provision" in problem


@pytest.mark.parametrize("env, words", [
    ({"LLAMA_ARG_CTX_SIZE": "4096"}, ["LLAMA_ARG_CTX_SIZE is set by halo-provision", "set head_ctx_size instead"]),
    ({"LLAMA_ARG_API_KEY": "secret"}, ["a key belongs in no environment", "set head_api_key_file instead"]),
    ({"1BAD": "x"}, ["the name of entry '1BAD'", "a letter or '_' first"]),
    ({"A-B": "x"}, ["the name of entry 'A-B'"]),
    ({"A": "x\ny"}, ["the value of entry 'A': 'x\\ny' is not allowed", "without newlines, NULs"]),
    ({"A": "x\x00"}, ["the value of entry 'A'"]),
    ({"A": 1}, ["the value of entry 'A': 1 is not allowed"]),
    (["A=1"], ["a dict of environment variables for llama-server"]),
])
def test_bad_head_env_is_refused_naming_the_entry(env, words):
    with pytest.raises(SettingsError) as info:
        validate_inventory(inventory(halo1={"head_env": env}))
    (problem,) = info.value.problems
    assert problem.startswith(f"halo1: head_env = {env!r} is invalid: ") and problem.endswith(".")
    assert "\n" not in problem
    for word in words:
        assert word in problem, problem


def test_every_llama_arg_flag_is_refused_in_head_env_and_other_names_pass():
    with pytest.raises(SettingsError) as info:
        validate_inventory(inventory(halo1={"head_env": {"LLAMA_ARG_ALIAS": "tiny"}}))
    (problem,) = info.value.problems
    assert "LLAMA_ARG_ALIAS is one of llama-server's flags" in problem and "set the head_* variable" in problem
    s, _ = head_view(inventory(halo1={"head_env": {"GPU_MAX_HW_QUEUES": "2", "llama_arg_lower": "x"}}))
    assert s.head_env == {"GPU_MAX_HW_QUEUES": "2", "llama_arg_lower": "x"}


def test_ipv6_listen_address_and_health_url():
    s, _ = head_view(inventory(halo1={"head_bind_address": "fd51::11"}))
    assert server_env(s, [], "/m.gguf", None)["LLAMA_ARG_HOST"] == "fd51::11"
    assert health_url(s) == "http://[fd51::11]:8080/health"


@pytest.mark.parametrize("bind, url", [
    (None, "http://10.151.0.11:8080/health"),  # rpc_bind_address
    ("0.0.0.0", "http://127.0.0.1:8080/health"),
    ("::", "http://[::1]:8080/health"),
])
def test_health_url_asks_loopback_when_binding_everything(bind, url):
    s, _ = head_view(inventory(halo1={"head_bind_address": bind}))
    assert health_url(s) == url


# -- the model --------------------------------------------------------------------------------------


def test_model_file_is_model_path_or_the_download_in_model_dir():
    assert model_file(Settings(model_path="/srv/m/a.gguf")) == "/srv/m/a.gguf"
    url = Settings(model_url="http://10.151.0.1:8000/models/Qwen3-8B-Q8_0.gguf?download=1", model_sha256=SHA)
    assert model_file(url) == "/var/lib/halo-provision/models/Qwen3-8B-Q8_0.gguf"
    odd = Settings(model_url="http://10.151.0.1:8000/get/", model_sha256=SHA, model_dir="/srv/models")
    assert model_file(odd) == f"/srv/models/{SHA[:16]}.gguf"


@pytest.fixture
def served(tmp_path):
    """A directory served over HTTP on 127.0.0.1 (like the lab's bridge server)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


needs_tools = pytest.mark.skipif(not (shutil.which("bash") and shutil.which("curl") and shutil.which("sha256sum")),
                                 reason="needs bash, curl and sha256sum")


@needs_tools
def test_download_script_checks_the_sha256_before_the_file_takes_its_place(served, tmp_path):
    root, base = served
    (root / "m.gguf").write_bytes(b"GGUF tiny")
    good = hashlib.sha256(b"GGUF tiny").hexdigest()
    dest = tmp_path / "models" / "m.gguf"
    dest.parent.mkdir()

    bad = subprocess.run(["bash", "-c", download_script(f"{base}/m.gguf", "0" * 64, str(dest))],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "model_sha256 mismatch" in bad.stderr and good in bad.stderr
    assert sorted(p.name for p in dest.parent.iterdir()) == []  # no model, no stamp, no partial file

    ok = subprocess.run(["bash", "-c", download_script(f"{base}/m.gguf", good, str(dest))],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert dest.read_bytes() == b"GGUF tiny"
    assert Path(f"{dest}.sha256").read_text() == f"{good}  m.gguf\n"


# -- validation -------------------------------------------------------------------------------------


def problems(**halo1) -> list[str]:
    with pytest.raises(SettingsError) as info:
        validate_inventory(inventory(halo1=halo1))
    return info.value.problems


def test_model_url_needs_model_sha256():
    (problem,) = problems(model_path=None, model_url="http://10.151.0.1:8000/m.gguf")
    assert problem.startswith("halo1: model_sha256 = None is invalid: model_url is set; expected the file's sha256")


def test_model_url_and_model_path_exclude_each_other():
    (problem,) = problems(model_url="http://10.151.0.1:8000/m.gguf", model_sha256=SHA)
    assert problem.startswith("halo1: model_url = 'http://10.151.0.1:8000/m.gguf' is invalid: model_path is set too")


def test_model_sha256_without_model_url():
    (problem,) = problems(model_sha256=SHA)
    assert "model_sha256" in problem and "model_url is None" in problem


@pytest.mark.parametrize("variable, value, words", [
    ("model_sha256", "abc", "64 hex digits"),
    ("model_url", "ftp://10.151.0.1/m.gguf", "http:// or https:// URL"),
    ("model_path", "models/m.gguf", "absolute path"),
    ("model_dir", "/srv/my models", "absolute directory path"),
    ("head_gpu_layers", "many", "'all', 'auto' or a whole number"),
    ("head_gpu_layers", -1, "'all', 'auto' or a whole number"),
    ("head_flash_attn", True, "'on', 'off' or 'auto'"),
    ("head_ctx_size", -1, "from 0"),
    ("head_parallel", 0, "from 1 to 256"),
    ("head_cache_type_k", "q3_k", "'q8_0'"),
    ("head_tensor_split", [], "non-negative proportions"),
    ("head_tensor_split", [1, -1], "non-negative proportions"),
    ("head_tensor_split", [0, 0], "every entry is 0"),
    ("head_metrics", "yes", "True"),
    ("head_log_verbosity", 9, "0 (errors only) to 5"),
    ("head_api_key_file", "key.txt", "absolute path of a root-only file"),
    ("head_ready_timeout_s", 5, "from 10 to 86400"),
])
def test_bad_head_values_are_named_with_the_fix(variable, value, words):
    found = [p for p in problems(**{variable: value}) if p.startswith(f"halo1: {variable} = {value!r} is invalid")]
    assert found, problems(**{variable: value})
    assert words in found[0] and "Fix it in" in found[0]


def test_a_head_needs_a_model():
    s, rpc = head_view(inventory(halo1={"model_path": None}))
    (problem,) = head_problems(s, rpc)
    assert problem.startswith("halo1: model_path = None is invalid: halo1 is in group head and needs a model")
    assert "model_url and model_sha256" in problem


def test_tensor_split_longer_than_the_devices_is_refused():
    s, rpc = head_view(inventory(halo1={"head_tensor_split": [1, 1, 1, 1]}))
    (problem,) = head_problems(s, rpc)
    assert "4 entries but llama-server on halo1 has at most 3 devices (2 RPC servers, then its own GPU)" in problem
    s, rpc = head_view(inventory(halo1={"head_tensor_split": [1, 1, 2]}))
    assert head_problems(s, rpc) == []


# -- the unit ---------------------------------------------------------------------------------------


def directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_unit_runs_current_as_an_unprivileged_hardened_service():
    s, _ = head_view(inventory())
    lines = directives(render_unit(s))
    for wanted in ["User=llama-server", "SupplementaryGroups=render video", f"EnvironmentFile={ENV_FILE}",
                   "ExecStart=/opt/llama.cpp/current/bin/llama-server $HALO_LLAMA_SERVER_ARGS", "NoNewPrivileges=yes",
                   "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "CapabilityBoundingSet=",
                   "DeviceAllow=/dev/kfd rw"]:
        assert wanted in lines, wanted
    assert not any(line.startswith(("LoadCredential", "Environment=LLAMA")) for line in lines)


def test_unit_gives_mesa_a_writable_shader_cache():
    s, _ = head_view(inventory())
    lines = directives(render_unit(s))
    assert "CacheDirectory=halo-llama-server" in lines
    assert "Environment=MESA_SHADER_CACHE_DIR=/var/cache/halo-llama-server" in lines


def test_unit_waits_for_the_rpc_servers_and_restarts_whatever_the_exit_status_forever():
    """llama-server aborts at its next use of a worker that restarted: systemd starts it again, after
    a bounded wait for every RPC server (no crash loop while a worker reboots)."""
    s, _ = head_view(inventory())
    text = render_unit(s)
    unit, service = text.split("[Service]")[0], directives(text.split("[Service]")[1])
    assert "StartLimitIntervalSec=0" in directives(unit)  # systemd reads it in [Unit] only
    assert "ExecStartPre=/usr/local/libexec/halo-provision/wait-rpc-servers 60" in service
    assert "TimeoutStartSec=120" in service  # longer than the wait
    assert "Restart=always" in service and "RestartSec=3" in service
    starts = [line.split("=", 1)[0] for line in service if line.startswith("ExecStart")]
    assert starts == ["ExecStartPre", "ExecStart"]


def run_wait(rpc: str, tmp_path: Path, timeout_s: int = 1) -> subprocess.CompletedProcess:
    """The wait-rpc-servers script as the step writes it, run here with bash."""
    script = tmp_path / "wait-rpc-servers"
    script.write_text(render_wait_rpc())
    script.chmod(0o755)
    return subprocess.run([str(script), str(timeout_s)], env={"PATH": "/usr/bin:/bin", "LLAMA_ARG_RPC": rpc},
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def listening():
    """Two TCP ports on 127.0.0.1 that accept connections (their queue only: nobody accepts)."""
    import socket

    socks = []
    for _ in range(2):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        socks.append(sock)
    yield [f"127.0.0.1:{sock.getsockname()[1]}" for sock in socks]
    for sock in socks:
        sock.close()


@pytest.fixture
def closed_port():
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    return f"127.0.0.1:{port}"


def test_wait_script_returns_at_once_when_every_rpc_server_accepts(listening, tmp_path):
    proc = run_wait(",".join(listening), tmp_path)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc


def test_wait_script_without_rpc_servers_does_not_wait(tmp_path):
    proc = run_wait("", tmp_path)
    assert proc.returncode == 0 and proc.stdout == "", proc


def test_wait_script_names_the_rpc_servers_that_stay_down(listening, closed_port, tmp_path):
    proc = run_wait(",".join([listening[0], closed_port]), tmp_path, timeout_s=2)
    assert proc.returncode == 1
    assert proc.stdout == f"waiting for RPC servers to accept connections: {closed_port}\n"
    assert proc.stderr.startswith("RPC servers that do not accept connections after ")
    assert proc.stderr.rstrip().split(": ", 1)[1].startswith(f"{closed_port}; see halo-rpc@<port>")


def test_wait_script_returns_once_a_late_rpc_server_listens(closed_port, tmp_path):
    import socket

    host, port = closed_port.split(":")
    later = threading.Timer(2, lambda: late.listen(4))
    late = socket.socket()
    late.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    late.bind((host, int(port)))
    later.start()
    try:
        proc = run_wait(closed_port, tmp_path, timeout_s=30)
    finally:
        late.close()
    assert proc.returncode == 0, proc
    assert proc.stdout.splitlines()[0] == f"waiting for RPC servers to accept connections: {closed_port}"
    assert proc.stdout.splitlines()[-1].startswith("every RPC server accepts connections after ")


def test_unit_hands_the_api_key_file_over_as_a_credential():
    s, _ = head_view(inventory(halo1={"head_api_key_file": "/etc/halo-provision/api-key"}))
    lines = directives(render_unit(s))
    assert "LoadCredential=api-key:/etc/halo-provision/api-key" in lines
    assert "Environment=LLAMA_ARG_API_KEY_FILE=%d/api-key" in lines


def test_unit_lets_the_service_read_a_model_in_a_home():
    s, _ = head_view(inventory(halo1={"model_path": "/home/alice/models/m.gguf"}))
    assert "ProtectHome=read-only" in directives(render_unit(s))


# -- the load-mode probe ----------------------------------------------------------------------------


def test_probe_parses_both_spellings():
    new = ["-lm,   --load-mode MODE                 model loading mode (default: auto)"]
    old = ["-dio,  --direct-io, -ndio, --no-direct-io use DirectIO if available. (default: disabled)"]
    assert load_mode_flag(help_flags(new)) == "--load-mode"
    assert load_mode_flag(help_flags(old)) == "-dio"
    assert load_mode_flag(help_flags(["--no-mmap                               do not memory-map model"])) is None
    # a flag mentioned in a description is not an option of the build
    assert load_mode_flag(help_flags(["--mmap, --no-mmap    (see also --load-mode)"])) is None


@pytest.mark.skipif(not HOST_BUILD.exists(), reason="no llama.cpp build on this machine")
def test_probe_of_a_real_build():
    command = LlamaServerHelp().command(binary=str(HOST_BUILD))
    proc = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == ""
    assert LlamaServerHelp().process(proc.stdout.splitlines()) == {"runs": True, "load_mode": "--load-mode",
                                                                   "api_key_file_env": True}


def test_probe_of_a_missing_binary_is_the_default():
    command = LlamaServerHelp().command(binary="/nonexistent/llama-server")
    proc = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""


# -- operations: what they do for given facts ---------------------------------------------------------


BUILD = "/opt/llama.cpp/builds/0123456789ab-1a2b3c4d/bin/llama-server"
NEW_BUILD = "/opt/llama.cpp/builds/fedcba987654-1a2b3c4d/bin/llama-server"


def status(active="active", exe=BUILD, binary=BUILD) -> dict:
    return {LlamaServerStatus: {"active": active, "pid": 42 if exe else None, "exe": exe, "binary": binary}}


@pytest.mark.parametrize("facts, changed, restarts", [
    (status(), False, False),
    (status(), True, True),
    (status(exe=f"{BUILD} (deleted)", binary=NEW_BUILD), False, True),
    (status(active="inactive", exe=None), False, True),
    (status(active="failed", exe=None), False, True),
    (status(active="activating", exe=None), False, False),  # systemd is restarting it: the wait judges
])
def test_serving_restarts_only_for_a_reason(facts, changed, restarts):
    commands, noops = run_operation(serving, facts, s=Settings(), because={"its settings changed": changed}, rpc=[])
    assert [c.get_raw_value() for c in commands] == (["systemctl restart halo-llama-server.service"]
                                                      if restarts else [])
    assert bool(noops) != restarts


def test_serving_says_why_it_restarts(monkeypatch):
    fake = fake_host.FakeHost(status())
    with ctx_host.use(fake):
        list(serving._inner(s=Settings(), because={"its unit changed": False, "its env file changed": True}, rpc=[]))
    assert fake.logs == ["Restarting halo-llama-server.service: its env file changed"]
    monkeypatch.setattr(fake_host.FakeState, "is_executing", False)  # a dry run: the same reason, as a prediction
    fake = fake_host.FakeHost(status())
    with ctx_host.use(fake):
        commands = list(serving._inner(s=Settings(), because={"its env file changed": True}, rpc=[]))
    assert fake.logs == ["Will restart halo-llama-server.service: its env file changed"] and commands


def test_serving_restarts_only_once_every_rpc_server_accepts_connections():
    rpc = ["10.151.0.12:50052", "10.151.0.13:50052", "10.151.0.13:50053"]
    commands, _ = run_operation(serving, status(active="inactive", exe=None), s=Settings(head_ready_timeout_s=300),
                                because={}, rpc=rpc)
    assert [c.get_raw_value() for c in commands] == [
        "systemctl stop halo-llama-server.service",  # its connections would keep the probes queued
        "env LLAMA_ARG_RPC=10.151.0.12:50052,10.151.0.13:50052,10.151.0.13:50053 "
        "/usr/local/libexec/halo-provision/wait-rpc-servers 300",
        "systemctl start halo-llama-server.service",
    ]
    commands, _ = run_operation(serving, status(), s=Settings(), because={}, rpc=rpc)
    assert commands == []  # no restart, no probe of the RPC servers it serves from


def test_ready_waits_only_when_health_is_not_200():
    commands, noops = run_operation(ready, {HttpStatus: 200}, url="http://10.151.0.11:8080/health", timeout_s=600)
    assert commands == [] and noops == ["http://10.151.0.11:8080/health answers 200"]
    commands, _ = run_operation(ready, {HttpStatus: 503}, url="http://10.151.0.11:8080/health", timeout_s=600)
    (upload,) = [c for c in commands if isinstance(c, FileUploadCommand)]  # run as long work (progress lines)
    assert upload.dest == "/var/lib/halo-provision/work/llama-server-ready/script"
    script = upload.src.getvalue()
    assert "export HALO_TIMEOUT_S=600" in script and "journalctl -u" in script and "auto-restart" in script


def test_download_is_skipped_when_the_stamp_matches():
    from pyinfra.facts.files import File, FileContents

    dest = "/var/lib/halo-provision/models/tiny.gguf"
    done = {FileContents: [f"{SHA}  tiny.gguf"], File: {"size": 1, "mode": 644, "user": "root"}}
    commands, noops = run_operation(verified_download, done, url="http://x/tiny.gguf", sha256=SHA, dest=dest)
    assert commands == [] and noops
    other = {FileContents: [f"{'1' * 64}  tiny.gguf"], File: {"size": 1, "mode": 644, "user": "root"}}
    commands, _ = run_operation(verified_download, other, url="http://x/tiny.gguf", sha256=SHA, dest=dest)
    uploads = [c for c in commands if isinstance(c, FileUploadCommand)]  # run as long work (progress lines)
    assert len(uploads) == 1 and "curl" in uploads[0].src.getvalue() and f"HALO_SHA256={SHA}" in uploads[0].src.getvalue()
    assert uploads[0].dest == "/var/lib/halo-provision/work/download-tiny.gguf/script"
    gone = {FileContents: [f"{SHA}  tiny.gguf"], File: None}
    commands, _ = run_operation(verified_download, gone, url="http://x/tiny.gguf", sha256=SHA, dest=dest)
    assert any(isinstance(c, FileUploadCommand) for c in commands)


@pytest.mark.parametrize("info, words", [
    (None, "does not exist"),
    ({"user": "root", "mode": 640, "size": 65}, "make it root-only"),
    ({"user": "alice", "mode": 600, "size": 65}, "owned by alice"),
    ({"user": "root", "mode": 600, "size": 0}, "is empty"),
])
def test_api_key_file_must_be_root_only_and_not_empty(info, words):
    from pyinfra.facts.files import File

    commands, _ = run_operation(private_key_file, {File: info}, path="/etc/halo-provision/api-key")
    (command,) = commands
    assert isinstance(command, FunctionCommand)
    assert words in command.args[0] and command.args[0].startswith("halo1: head_api_key_file")


def test_api_key_file_root_only_passes():
    from pyinfra.facts.files import File

    commands, noops = run_operation(private_key_file, {File: {"user": "root", "mode": 600, "size": 65}},
                                    path="/etc/halo-provision/api-key")
    assert commands == [] and noops == ["/etc/halo-provision/api-key is root-only"]


def probed(case: str) -> dict:
    """LlamaServerHelp of a captured --help (tests/unit/facts/LlamaServerHelp/<case>.json)."""
    path = Path(__file__).parent / "facts" / "LlamaServerHelp" / f"{case}.json"
    return LlamaServerHelp().process(json.loads(path.read_text())["output"].splitlines())


KEYED = Settings(head_api_key_file="/etc/halo-provision/api-key", **MODEL)


def env_file_commands(s: Settings, help_case: str, monkeypatch) -> list:
    """What server_env_file yields for this --help; files.put stands in as the string "put"."""
    import deploys.head

    monkeypatch.setattr(deploys.head.files.put, "_inner", lambda **kwargs: iter(["put"]))
    commands, _ = run_operation(server_env_file, {LlamaServerHelp: probed(help_case)},
                                s=s, rpc=[], model=MODEL["model_path"])
    return commands


@pytest.mark.parametrize("case", ["api_key_file_not_from_env", "before_direct_io", "direct_io_build"])
def test_a_build_that_would_ignore_the_api_key_is_not_started(case, monkeypatch):
    (command,) = env_file_commands(KEYED, case, monkeypatch)  # no env file written, so nothing (re)starts on it
    assert isinstance(command, FunctionCommand)
    message = command.args[0]
    assert message.startswith("halo1: head_api_key_file = '/etc/halo-provision/api-key' is set")
    assert "does not read LLAMA_ARG_API_KEY_FILE" in message and "serve with no API key" in message
    assert "llama_cpp_ref" in message and "unset head_api_key_file" in message


def test_a_build_that_reads_the_api_key_file_gets_its_env_file(monkeypatch):
    assert env_file_commands(KEYED, "load_mode_build", monkeypatch) == ["put"]


def test_without_an_api_key_any_build_serves(monkeypatch):
    assert env_file_commands(Settings(**MODEL), "before_direct_io", monkeypatch) == ["put"]


# -- a new build: llama-server waits out the RPC servers' switch, stopped ------------------------------


def test_llama_server_on_an_older_build_is_stopped_before_the_rpc_servers_switch_and_started_after():
    from deploys.head import pause_for_new_build, resume_after_new_build
    from deploys.runcache import run_store
    from tests.unit.fake_host import FakeHost

    s = Settings(model_path="/m.gguf")
    commands, _ = run_operation(pause_for_new_build, status(exe=BUILD, binary=NEW_BUILD), s=s)
    assert [c.get_raw_value() for c in commands] == ["systemctl stop halo-llama-server.service"]
    commands, _ = run_operation(resume_after_new_build, {}, s=s)
    assert [c.get_raw_value() for c in commands] == [
        "LLAMA_ARG_RPC=\"$(sed -n 's/^LLAMA_ARG_RPC=//p' /etc/halo-provision/llama-server.env | tr -d '\"')\" "
        f"/usr/local/libexec/halo-provision/wait-rpc-servers {s.head_ready_timeout_s}",
        "systemctl start halo-llama-server.service"]
    run_store("paused_heads", FakeHost.state).clear()


@pytest.mark.parametrize("facts", [status(), status(active="inactive", exe=None, binary=NEW_BUILD)])
def test_llama_server_on_the_current_build_or_stopped_is_left_alone(facts):
    from deploys.head import pause_for_new_build, resume_after_new_build

    s = Settings(model_path="/m.gguf")
    commands, noops = run_operation(pause_for_new_build, facts, s=s)
    assert commands == [] and noops
    commands, noops = run_operation(resume_after_new_build, {}, s=s)
    assert commands == [] and noops == ["halo-llama-server.service was not stopped for a new build"]


def test_the_rpc_list_is_read_back_from_the_environment_file_as_systemd_reads_it(tmp_path):
    from deploys.head import env_file_text, rpc_from_env_file, server_env

    rpc = ["10.151.0.12:50052", "10.151.0.13:50053"]
    path = tmp_path / "llama-server.env"
    path.write_text(env_file_text(server_env(Settings(model_path="/m.gguf"), rpc, "/m.gguf", None), None))
    proc = subprocess.run(["sh", "-c", f'echo "{rpc_from_env_file(str(path))}"'], capture_output=True, text=True)
    assert proc.stdout.strip() == ",".join(rpc)
