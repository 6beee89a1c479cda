"""Serve the model with llama-server on the head, its layers spread over the RPC workers.

    pyinfra inventories/lab.py deploys/head.py      # after deploys/llama_cpp.py and deploys/rpc_worker.py

On each host in group head:

- the model: `model_path` (a GGUF file already on the head), or `model_url`, downloaded once into
  `model_dir` and checked against `model_sha256` before it takes the file's place (a stamp
  `<file>.sha256` records the check, so later runs do not hash the model again);
- the system user `llama-server` (no login shell, no home) in the groups render and video;
- /etc/halo-provision/llama-server.env (root-only): llama-server's settings as the LLAMA_ARG_*
  variables it reads for each flag: model, --host/--port, -ngl, -fa, -c, -np, -ctk/-ctv,
  --metrics, the log verbosity, --rpc, -ts, and the load mode DirectIO, spelt as the built binary's
  --help says (`--load-mode dio`, or `-dio` on older builds: probed when the file is written);
  then `head_env` (other environment, e.g. ROCm/Mesa tunables), quoted for systemd;
- halo-llama-server.service, hardened, running `<llama_cpp_prefix>/current/bin/llama-server`;
  with `head_api_key_file`, systemd hands that root-only file to the service as a credential
  (LoadCredential=), so the key is in no unit, environment file or command line. A build whose
  --help names no LLAMA_ARG_API_KEY_FILE (older than mid-2026) would ignore the key and serve open:
  the host then fails before llama-server is (re)started, with the fix;
- /usr/local/libexec/halo-provision/wait-rpc-servers, which waits (bounded) until every RPC server
  of the --rpc list accepts a TCP connection: the unit runs it before every start (ExecStartPre),
  and systemd starts llama-server again whenever it exits (Restart=always, no start limit): it
  aborts at its next use of an RPC server that restarted, as llama.cpp's RPC client does not
  reconnect, and serves again by itself once that server is back;
- a restart only when the unit, the settings or the model changed, or `current` is a newer build
  than the running process, and only once every RPC server accepts connections (the step waits for
  them up to head_ready_timeout_s); then the step waits for GET /health to answer 200 (loading over RPC
  takes minutes on big models; a progress line every 30 s, the wait's log in
  /var/lib/halo-provision/work/llama-server-ready/log) and fails with the service's last journal
  lines when it does not, or at once when llama-server exits.

On a host that is not (or no longer) in group head, halo-llama-server.service is stopped and
disabled and its environment file removed; with no role left, its firewall table too.

The --rpc list is every RPC server of the hosts in group rpc_workers, in inventory order, except
the head's own: llama-server already uses the head's GPU directly, and its own RPC server would
only show the same GPU a second time (twice the memory counted, every tensor through loopback TCP).
The head's own RPC server keeps running for other heads.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from io import StringIO
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.facts.files import Directory, File, FileContents
from pyinfra.facts.server import Which
from pyinfra.operations import files, systemd

from deploys import shipped, topology
from deploys.accounts import HEAD_USER, account_reads, service_accounts
from deploys.common import env_file_line, failure, install_packages
from deploys.fit import fits, gather, serving_rpc
from deploys.llama_cpp import coming_build
from deploys.models import download_script, part_url, token_file_problem, url_name
from deploys.plan import announce, daemon_reload_when, reasons
from deploys.progress import long_work
from deploys.serving import ARGS_VARIABLE, server_args, supported_by_build, tuning_env
from deploys.runcache import file_reads, prefetch, run_store, unit_reads
from deploys.settings import Settings, SettingsError, settings
from deploys.settings.fields import unscoped
from facts.distro import Distro
from facts.gguf import GgufModel
from facts.llama_server_flags import LlamaServerFlags
from facts.network import RouteSources
from facts.llama_server import API_KEY_FILE_ENV, HttpStatus, LlamaServerHelp, LlamaServerStatus
from facts.services import UnitStates

USER = HEAD_USER
UNIT = "halo-llama-server.service"
ENV_FILE = "/etc/halo-provision/llama-server.env"
UNIT_TEMPLATE = "etc/systemd/system/halo-llama-server.service.j2"
WAIT_RPC = "/usr/local/libexec/halo-provision/wait-rpc-servers"
WAIT_RPC_TEMPLATE = "usr/local/libexec/halo-provision/wait-rpc-servers.j2"
RPC_WAIT_S = 60  # ExecStartPre waits this long for the RPC servers, then systemd tries again
RESTART_S = 3  # systemd starts llama-server again this long after it exited
PROGRESS_EVERY_S = 15  # the wait's log gets a line this often (deploys/progress.py shows one every 30 s)
JOURNAL_LINES = 40  # deploys/scripts/llama-server-ready.sh prints this many journal lines on failure


# -- what the head serves ---------------------------------------------------------------------------

def model_file(s: Settings) -> str:
    """The GGUF file llama-server loads: model_path, or the download's place in model_dir.

    The download keeps the URL's file name when it is a plain *.gguf one, else it is named by its sha256.
    """
    if s.model_path is not None:
        return s.model_path
    if s.model_files:  # a split model: llama-server opens the first part and finds the others
        return f"{s.model_dir.rstrip('/') or ''}/{url_name(part_url(s, s.model_files[0]))}"
    name = url_name(s.model_url or "")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*\.gguf", name):
        name = f"{(s.model_sha256 or 'model')[:16]}.gguf"
    return f"{s.model_dir.rstrip('/') or ''}/{name}"


def head_problems(s: Settings, rpc: list[str]) -> list[str]:
    """What stops this head from serving, one explanation each (host, variable, value, fix)."""
    problems = []
    if s.model_path is None and s.model_url is None and not s.model_files:
        problems.append(s._problem(
            "model_path", f"{s.host_name} is in group head and needs a model to serve; expected the "
            "absolute path of a GGUF file on the head, or set model_url and model_sha256 instead"))
    ipv6 = [endpoint for endpoint in rpc if endpoint.startswith("[")]
    if ipv6:
        problems.append(
            f"{s.host_name}: the --rpc list {', '.join(ipv6)} is IPv6, but llama.cpp's RPC client connects "
            "over IPv4 only (ggml-rpc resolves with gethostbyname and splits host:port at the first ':'). "
            "Fix it in the inventory: give those workers their IPv4 cluster-link address as rpc_bind_address.")
    if s.head_tensor_split is not None and len(s.head_tensor_split) > len(rpc) + 1:
        problems.append(s._problem(
            "head_tensor_split", f"it has {len(s.head_tensor_split)} entries but llama-server on "
            f"{s.host_name} has at most {len(rpc) + 1} devices ({len(rpc)} RPC servers, then its own GPU); "
            "expected one proportion per device"))
    return problems


def listen_host(s: Settings) -> str:
    """LLAMA_ARG_HOST: the address llama-server binds (IPv6 without brackets)."""
    return str(s.head_listen_address)


def health_host(s: Settings) -> str:
    """The address the head itself asks llama-server on (loopback when it binds every address), for a URL."""
    address = s.head_listen_address
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return f"[{address}]" if address.version == 6 else str(address)


def health_url(s: Settings) -> str:
    return f"http://{health_host(s)}:{s.head_port}/health"


def server_env(s: Settings, rpc: list[str], model: str, load_mode: str | None) -> dict[str, str]:
    """llama-server's settings as the LLAMA_ARG_* variables it reads (names from llama.cpp's common/arg.cpp).

    `load_mode` is the DirectIO flag the binary knows: "--load-mode", "-dio" or None (neither).
    """
    env = {
        "LLAMA_ARG_MODEL": model,
        "LLAMA_ARG_HOST": listen_host(s),
        "LLAMA_ARG_PORT": str(s.head_port),
        "LLAMA_ARG_N_GPU_LAYERS": str(s.head_gpu_layers),
        "LLAMA_ARG_FLASH_ATTN": s.head_flash_attn,
        "LLAMA_ARG_CTX_SIZE": str(s.head_ctx_size),
        "LLAMA_ARG_N_PARALLEL": str(s.head_parallel),
        "LLAMA_ARG_CACHE_TYPE_K": s.head_cache_type_k,
        "LLAMA_ARG_CACHE_TYPE_V": s.head_cache_type_v,
        "LLAMA_ARG_LOG_VERBOSITY": str(s.head_log_verbosity),
    }
    if s.head_metrics:
        env["LLAMA_ARG_ENDPOINT_METRICS"] = "1"
    if rpc:
        env["LLAMA_ARG_RPC"] = ",".join(rpc)
    if s.head_tensor_split is not None:
        env["LLAMA_ARG_TENSOR_SPLIT"] = ",".join(f"{share:g}" for share in s.head_tensor_split)
    if load_mode == "--load-mode":
        env["LLAMA_ARG_LOAD_MODE"] = "dio"
    elif load_mode == "-dio":
        env["LLAMA_ARG_DIO"] = "1"
    env.update(tuning_env(s))
    if server_args(s):  # flags without an LLAMA_ARG_* twin: ExecStart passes them on
        env[ARGS_VARIABLE] = " ".join(server_args(s))
    return env


def env_file_text(env: dict[str, str], load_mode: str | None, head_env: dict[str, str] | None = None) -> str:
    """The environment file systemd reads for the unit: the LLAMA_ARG_* values, then head_env, each
    line quoted by env_file_line (any text but newlines and NULs arrives unchanged)."""
    note = {
        "--load-mode": "DirectIO loading as `--load-mode dio` (this build's spelling)",
        "-dio": "DirectIO loading as `-dio` (this build predates --load-mode)",
        None: "this build knows neither --load-mode nor -dio: llama.cpp's default loading",
    }[load_mode]
    lines = [
        "# Written by halo-provision (deploys/head.py); do not edit: the next run replaces it.",
        f"# llama-server's settings for {UNIT}, one LLAMA_ARG_* variable per flag; {note}.",
    ]
    lines += [env_file_line(key, value) for key, value in env.items()]
    if head_env:
        lines.append("# head_env, quoted for systemd:")
        lines += [env_file_line(name, value) for name, value in head_env.items()]
    return "\n".join(lines) + "\n"


def unit_data(s: Settings) -> dict:
    """Values of halo-llama-server.service."""
    model_home = any(re.match(r"^/(home|root|run/user)(/|$)", path)
                     for path in (model_file(s), s.head_chat_template_file or ""))
    return {
        "unit": UNIT, "service_user": USER, "env_file": ENV_FILE, "port": s.head_port,
        "binary": binary(s), "api_key_file": s.head_api_key_file, "args_variable": ARGS_VARIABLE,
        "health_host": health_host(s), "wait_rpc": WAIT_RPC, "rpc_wait_s": RPC_WAIT_S, "restart_s": RESTART_S,
        # the model (or chat template) may live in a home directory: read-only there, else homes are hidden
        "protect_home": "read-only" if model_home else "yes",
    }


def render_unit(s: Settings) -> str:
    """halo-llama-server.service as files.template renders it in this step (for tests)."""
    return shipped.render(UNIT_TEMPLATE, **unit_data(s))


def wait_rpc_data() -> dict:
    """Values of the wait-rpc-servers script."""
    return {"unit": UNIT, "path": WAIT_RPC, "default_timeout_s": RPC_WAIT_S}


def render_wait_rpc() -> str:
    """The wait-rpc-servers script as files.template renders it in this step (for tests)."""
    return shipped.render(WAIT_RPC_TEMPLATE, **wait_rpc_data())


def wait_rpc_command(rpc: list[str], timeout_s: int) -> StringCommand:
    """Wait until every RPC server of `rpc` accepts connections (at most timeout_s), as the unit does
    before each start; the step runs it before it (re)starts the unit."""
    return StringCommand("env", shlex.quote(f"LLAMA_ARG_RPC={','.join(rpc)}"), WAIT_RPC, str(timeout_s))


def binary(s: Settings) -> str:
    return f"{s.llama_cpp_prefix}/current/bin/llama-server"


def ready_script(url: str, timeout_s: int) -> str:
    """deploys/scripts/llama-server-ready.sh with its values set first: wait for `url` to answer 200;
    fail early when the unit stopped or crashed, with its journal (JOURNAL_LINES lines)."""
    env = {"HALO_URL": url, "HALO_UNIT": UNIT, "HALO_TIMEOUT_S": str(timeout_s), "HALO_EVERY_S": str(PROGRESS_EVERY_S)}
    lines = [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    return "\n".join(lines) + "\n" + Path(shipped.script("llama-server-ready.sh")).read_text()


# -- operations that read the host when they run ---------------------------------------------------

@operation()
def verified_download(url: str, sha256: str, dest: str, variable: str = "model_sha256", token_file: str | None = None):
    """Download `url` to `dest` unless the stamp `<dest>.sha256` says it already holds `sha256`."""
    stamp = host.get_fact(FileContents, path=f"{dest}.sha256") or []
    if stamp and stamp[0].split()[:1] == [sha256] and host.get_fact(File, path=dest):
        host.noop(f"{dest} holds the model with sha256 {sha256[:12]}...")
        return
    name = dest.rsplit("/", 1)[-1]  # a progress line at least every 30 s in pyinfra's normal output
    yield from long_work(f"download-{name}", f"download {name}",
                         download_script(url, sha256, dest, variable, token_file=token_file))


@operation()
def existing_file(path: str, variable: str):
    """Fail the host when `path` (the value of `variable`) is not a file on it."""
    if host.get_fact(File, path=path):
        host.noop(f"{path} exists")
        return
    yield failure(f"{variable} = {path!r} is not a file on this host; copy the GGUF file there, "
                  "or set model_url and model_sha256 to download it")


@operation()
def private_key_file(path: str):
    """Fail the host unless `path` is a non-empty file only root can read (the API key)."""
    info = host.get_fact(File, path=path)
    if not info:
        yield failure(f"head_api_key_file = {path!r} does not exist; create it as root, one key per line: "
                      f"(umask 077; openssl rand -hex 32 > {path})")
    elif info["user"] != "root" or info["mode"] % 100:
        yield failure(f"head_api_key_file = {path!r} is owned by {info['user']} with mode {info['mode']}, so "
                      f"others may read the API key; make it root-only: chown root:root {path}; chmod 600 {path}")
    elif not info["size"]:
        yield failure(f"head_api_key_file = {path!r} is empty, and llama-server would then ask for no key; "
                      "write the key(s) into it, one per line")
    else:
        host.noop(f"{path} is root-only")


def api_key_unsupported(s: Settings) -> str:
    """Why a head with head_api_key_file is not (re)started on a build that would ignore the key."""
    return (f"head_api_key_file = {s.head_api_key_file!r} is set, but the llama-server at {binary(s)} "
            f"(llama_cpp_ref = {s.llama_cpp_ref!r}) does not read {API_KEY_FILE_ENV}: its --help names no such "
            "variable, so it would serve with no API key. llama-server was not (re)started. Set llama_cpp_ref to a "
            "llama.cpp from mid-2026 or newer and run deploys/llama_cpp.py, or unset head_api_key_file to serve "
            "without a key")


@operation()
def server_env_file(s: Settings, rpc: list[str], model: str):
    """Write the root-only environment file for the binary `current` holds when this runs; fail the
    host when that binary would ignore the API key asked for (before the unit is (re)started)."""
    rpc = rpc() if callable(rpc) else rpc  # head_rpc_servers = "auto": chosen when this runs
    probe = host.get_fact(LlamaServerHelp, binary=binary(s))
    if not probe["runs"]:
        yield failure(f"no working llama-server at {binary(s)}; run deploys/llama_cpp.py first "
                      "(deploys/full.py does), it builds llama.cpp and points `current` at the build")
        return
    if s.head_api_key_file is not None and not probe["api_key_file_env"]:
        yield failure(api_key_unsupported(s))
        return
    text = env_file_text(server_env(s, rpc, model, probe["load_mode"]), probe["load_mode"], s.head_env)
    yield from files.put._inner(src=StringIO(text), dest=ENV_FILE, user="root", group="root", mode="600")


@operation()
def serving(s: Settings, because: dict, rpc):
    """Start llama-server, or restart it when one of `because` holds (deploys/plan.reasons: its unit,
    settings or model changed in this run) or when the running process is not the build `current`
    points at (or will not be, after this run's build); first wait (at most head_ready_timeout_s)
    until every RPC server of `rpc` accepts connections."""
    status = host.get_fact(LlamaServerStatus, unit=UNIT, binary=binary(s))
    coming = None if host.state.is_executing else coming_build(s)
    if status["active"] not in ("active", "activating", "reloading"):
        why = [f"it is {status['active']}"]
    elif why := reasons(because):
        pass
    elif status["exe"] is not None and status["exe"] != status["binary"]:
        why = [f"it runs {status['exe']}, and current is {status['binary']}"]
    elif coming is not None:
        why = [f"this run's llama.cpp step puts a new build of {s.llama_cpp_ref} in place"]
    else:
        host.noop(f"{UNIT} runs {status['exe']} with the current settings")
        return
    announce(f"restart {UNIT}", why)
    rpc = rpc() if callable(rpc) else rpc  # head_rpc_servers = "auto": chosen when this runs
    if not rpc:
        yield StringCommand("systemctl", "restart", UNIT)
        return
    # Stop it first: an RPC server serves one client at a time, so while the running llama-server
    # holds them, the probes would wait in their (two-deep) accept queues and never get through.
    yield StringCommand("systemctl", "stop", UNIT)
    yield wait_rpc_command(rpc, s.head_ready_timeout_s)
    yield StringCommand("systemctl", "start", UNIT)


def rpc_from_env_file(path: str) -> str:
    """Shell text for the --rpc list in llama-server's environment file (its value is in double
    quotes there; an address:port list holds no character env_file_line escapes)."""
    return f"$(sed -n 's/^LLAMA_ARG_RPC=//p' {shlex.quote(path)} | tr -d '\"')"


def _paused() -> dict[str, bool]:
    """{head: True} for the heads whose llama-server pause_for_new_build stopped in this run."""
    return run_store("paused_heads")


@operation()
def pause_for_new_build(s: Settings):
    """Stop llama-server when it runs another build than `current` (switched in this run): the RPC
    servers restart on the new build next (deploys/rpc_worker.py), and a llama-server that reconnected
    to one still on the old build would abort once more. resume_after_new_build starts it after them."""
    status = host.get_fact(LlamaServerStatus, unit=UNIT, binary=binary(s))
    if status["active"] != "active" or status["exe"] is None or status["exe"] == status["binary"]:
        host.noop(f"{UNIT} is not running an older build")
        return
    if host.state.is_executing:
        _paused()[host.name] = True
        logger.info(f"{host.name}: stopping {UNIT} while the RPC servers switch to the new build")
    yield StringCommand("systemctl", "stop", UNIT)


@operation()
def resume_after_new_build(s: Settings):
    """Start llama-server again if pause_for_new_build stopped it, once every RPC server of its --rpc
    list accepts connections (at most head_ready_timeout_s)."""
    if host.name not in _paused():
        host.noop(f"{UNIT} was not stopped for a new build")
        return
    rpc = rpc_from_env_file(ENV_FILE)
    yield StringCommand(f'LLAMA_ARG_RPC="{rpc}"', WAIT_RPC, str(s.head_ready_timeout_s))
    yield StringCommand("systemctl", "start", UNIT)


@operation()
def ready(url: str, timeout_s: int):
    """Wait until `url` (/health) answers 200 with a progress line every 30 s; fail with the journal
    when it does not in time."""
    if host.get_fact(HttpStatus, url=url) == 200:
        host.noop(f"{url} answers 200")
        return
    yield from long_work("llama-server-ready", "wait for llama-server to load the model",
                         ready_script(url, timeout_s), tail_lines=JOURNAL_LINES + 5)


# -- the step ----------------------------------------------------------------------------------------


@operation()
def stop_serving():
    """Stop and disable llama-server on a host that is no head; remove its settings file."""
    state = host.get_fact(UnitStates, units=[UNIT]).get(UNIT, {"active": "inactive", "enabled": "not-found"})
    settings_file = host.get_fact(File, path=ENV_FILE)
    if state["active"] in ("inactive", "failed") and state["enabled"] in ("disabled", "not-found") \
            and not settings_file:
        host.noop(f"{UNIT} does not run on a host that is no head")
        return
    yield StringCommand("systemctl", "disable", "--now", UNIT, "2>/dev/null", "||", "true")  # no unit: nothing to stop
    yield StringCommand("systemctl", "reset-failed", UNIT, "2>/dev/null", "||", "true")
    yield StringCommand("rm", "-f", ENV_FILE)


def retire(is_rpc_worker: bool) -> None:
    """A host not (or no longer) in group head serves nothing; with no role left, it keeps no firewall."""
    stop_serving(name="Stop llama-server on a host not in head")
    if not is_rpc_worker:
        from deploys.firewall import retire_firewall  # deploys/firewall.py imports this module

        retire_firewall()


def model_files(s: Settings) -> list[str]:
    """The paths of the model's files on the head (each part of a split GGUF, else the one file)."""
    return [f"{s.model_dir.rstrip('/')}/{url_name(part_url(s, p))}" for p in s.model_files] or [model_file(s)]


def reads(s: Settings) -> list:
    """The facts this step reads on a host (for one prefetch: deploys/full.py reads every step's at once);
    on a host that is no head, what its retirement reads."""
    if not s.is_head:
        return [(File, {"path": ENV_FILE})]
    models = model_files(s)
    return (file_reads(ENV_FILE, WAIT_RPC, f"/etc/systemd/system/{UNIT}") + unit_reads(UNIT) + account_reads(s)
            + [(Which, {"command": "curl"}), *([(Directory, {"path": s.model_dir})] if s.model_dir else []),
               (LlamaServerHelp, {"binary": binary(s)}), (LlamaServerFlags, {"binary": binary(s)}),
               (GgufModel, {"path": model_file(s)})]
            + [(FileContents, {"path": f"{m}.sha256"}) for m in models] + [(File, {"path": m}) for m in models])


@deploy("Serve the model with llama-server")
def head() -> None:
    s = settings(host)
    if not s.is_head:
        retire(s.is_rpc_worker)
        return
    workers = topology.workers_of(host.inventory)
    rpc = topology.rpc_list(s, workers)
    problems = head_problems(s, rpc)
    if s.model_path is not None and not host.get_fact(File, path=s.model_path):  # before any change, like bad data
        problems.append(s._problem(
            "model_path", f"there is no such file on {s.host_name}; expected a GGUF file already there: "
            "copy the GGUF file there, or set model_url and model_sha256 to download it"))
    template = s.head_chat_template_file
    if template is not None and not host.get_fact(File, path=template):
        problems.append(s._problem("head_chat_template_file", f"there is no such file on {s.host_name}; expected "
                                   "a Jinja chat template file already there: copy it there, or set None"))
    if s.model_hf_token_file is not None and any(part.hf for part in s.model_files):
        problem = token_file_problem(host.get_fact(File, path=s.model_hf_token_file))
        if problem:
            problems.append(s._problem("model_hf_token_file", problem))
    used = sorted({str(unscoped(w.rpc_connect_address)) for w in workers
                   if w.rpc_connect_address is not None and topology.servers_for(w, s.host_name)})
    if used and s.head_source_address is not None:  # the workers' firewalls admit the head's address only
        problems += topology.route_problems(s, workers, host.get_fact(RouteSources, addresses=used))
    if problems:
        raise SettingsError(problems)
    model = model_file(s)
    prefetch(reads(s))

    if not host.get_fact(Which, command="curl"):  # downloads and /health; only installed here: no apt update else
        install_packages(host.get_fact(Distro), "Install curl", ["curl"], cache_time=3600)
    service_accounts(s)  # llama-server in render and video (deploys/accounts.py; once per run and host)

    if s.model_files:
        files.directory(name="Create the model directory", path=s.model_dir, user="root", group="root", mode="755")
        got_model = [verified_download(name=f"Download part {i} of the model and check its sha256",
                                       url=part_url(s, part), sha256=part.sha256,
                                       dest=f"{s.model_dir.rstrip('/')}/{url_name(part_url(s, part))}",
                                       variable=f"model_files[{i - 1}].sha256",
                                       token_file=s.model_hf_token_file if part.hf else None)
                     for i, part in enumerate(s.model_files, 1)]
    elif s.model_url is not None:
        files.directory(name="Create the model directory", path=s.model_dir, user="root", group="root", mode="755")
        got_model = [verified_download(name="Download the model and check its sha256", url=s.model_url,
                                       sha256=s.model_sha256, dest=model)]
    else:
        got_model = [existing_file(name="Check the model file", path=model, variable="model_path")]
    if s.head_api_key_file is not None:
        private_key_file(name="Check the API key file is root-only", path=s.head_api_key_file)

    head_gpus, rpc_gpus, endpoints = gather(s, workers)
    fits(name="Check the model fits the cluster's GPU memory", s=s, model_path=model, head=head_gpus,
         rpc=rpc_gpus, endpoints=endpoints, env=server_env(s, endpoints, model, None))
    supported_by_build(name="Check this build of llama-server takes the tuning settings", s=s, binary=binary(s))
    rpc_list = lambda: serving_rpc(s, model, head_gpus, rpc_gpus, endpoints)  # noqa: E731
    env = server_env_file(name="Write the llama-server settings", s=s, model=model, rpc=rpc_list)
    files.template(name="Install the wait for the RPC servers", src=shipped.template(WAIT_RPC_TEMPLATE),
                   dest=WAIT_RPC, user="root", group="root", mode="755", jinja_env_kwargs=dict(shipped.JINJA),
                   **wait_rpc_data())
    unit = files.template(name=f"Install {UNIT}", src=shipped.template(UNIT_TEMPLATE),
                          dest=f"/etc/systemd/system/{UNIT}", mode="644", jinja_env_kwargs=dict(shipped.JINJA),
                          **unit_data(s))
    daemon_reload_when(unit, UNIT)
    systemd.service(name=f"Start {UNIT} at every boot", service=UNIT, running=None, enabled=True)
    serving(name="Run llama-server with the current settings and build", s=s, rpc=rpc_list,
            because={f"{UNIT} changed": unit, f"{ENV_FILE} changed": env,
                     **{f"model download {i} of {len(got_model)} changed the model": op
                        for i, op in enumerate(got_model, 1)}})
    ready(name="Wait for llama-server to load the model", url=health_url(s), timeout_s=s.head_ready_timeout_s)


if __name__ in ("builtins", "__main__"):
    from deploys.firewall import firewall

    firewall()  # on the head: only llama-server's user (and root) may connect to the RPC servers
    head()
