"""llama-server on the head: what the built binary understands, whether its unit runs that binary,
and what its HTTP endpoint answers.

Usage::

    from facts.llama_server import HttpStatus, LlamaServerHelp, LlamaServerStatus
    host.get_fact(LlamaServerHelp, binary="/opt/llama.cpp/current/bin/llama-server")["load_mode"]  # "--load-mode"
    host.get_fact(LlamaServerStatus, unit="halo-llama-server.service",
                  binary="/opt/llama.cpp/current/bin/llama-server")["active"]                   # "active"
    host.get_fact(HttpStatus, url="http://10.151.0.11:8080/health")                              # 200
"""

from __future__ import annotations

import re
import shlex

from pyinfra.api import FactBase

# An option at the start of a --help line: "-lm,   --load-mode MODE   model loading mode ..."
_OPTION = re.compile(r"(--?[A-Za-z][A-Za-z0-9-]*)(?: [A-Z][A-Z0-9_.|-]*)?(?:,\s*|\s+|$)")
# The environment twin llama.cpp appends to an option's help: "(env: LLAMA_ARG_API_KEY_FILE)"
_ENV = re.compile(r"\(env: ([A-Z][A-Z0-9_]*)\)")
API_KEY_FILE_ENV = "LLAMA_ARG_API_KEY_FILE"


def help_flags(lines: list[str]) -> set[str]:
    """The option names that `llama-server --help` lists (those that start a line)."""
    flags: set[str] = set()
    for line in lines:
        pos = 0
        while line.startswith("-", pos) and (match := _OPTION.match(line, pos)):
            flags.add(match.group(1))
            pos = match.end()
    return flags


def help_envs(lines: list[str]) -> set[str]:
    """The LLAMA_ARG_* variables that `llama-server --help` names as options' environment twins."""
    return {name for line in lines for name in _ENV.findall(line)}


def load_mode_flag(flags: set[str]) -> str | None:
    """How this build asks for DirectIO loading: "--load-mode" (MODE dio), "-dio" (older builds) or None."""
    if "--load-mode" in flags:
        return "--load-mode"
    if "-dio" in flags or "--direct-io" in flags:
        return "-dio"
    return None


class LlamaServerHelp(FactBase[dict]):
    """What the llama-server binary accepts, from its --help: whether it ran, its load-mode flag, and
    whether it reads the API key file from LLAMA_ARG_API_KEY_FILE (builds since mid-2026; an older
    build ignores that variable and serves with no key).

    .. code:: python

        {"runs": True, "load_mode": "--load-mode",   # or "-dio" (older builds), or None (neither)
         "api_key_file_env": True}

    Default: {"runs": False, "load_mode": None, "api_key_file_env": False} (no binary, or it does not run).
    """

    @staticmethod
    def default() -> dict:
        return {"runs": False, "load_mode": None, "api_key_file_env": False}

    def command(self, binary: str) -> str:
        b = shlex.quote(binary)
        return f"if [ -x {b} ]; then {b} --help 2>&1 | grep -E '^-|\\(env: '; fi; true"

    def process(self, output: list[str]) -> dict:
        flags = help_flags(output)
        if "--help" not in flags:
            return self.default()
        return {"runs": True, "load_mode": load_mode_flag(flags),
                "api_key_file_env": API_KEY_FILE_ENV in help_envs(output)}


class LlamaServerStatus(FactBase[dict]):
    """The systemd unit's state and main process, and which build that process and `binary` are.

    `exe` is the executable of the running process (ends in " (deleted)" once its build was removed);
    `binary` is where the configured path points now. They differ after a new build: restart.

    .. code:: python

        {"active": "active", "pid": 4242,
         "exe": "/opt/llama.cpp/builds/0123456789ab-1a2b3c4d/bin/llama-server",
         "binary": "/opt/llama.cpp/builds/0123456789ab-1a2b3c4d/bin/llama-server"}

    Default: {"active": "inactive", "pid": None, "exe": None, "binary": None}.
    """

    @staticmethod
    def default() -> dict:
        return {"active": "inactive", "pid": None, "exe": None, "binary": None}

    def command(self, unit: str, binary: str) -> str:
        u, b = shlex.quote(unit), shlex.quote(binary)
        return (
            f"echo \"active=$(systemctl is-active {u} 2>/dev/null)\"; "
            f"pid=$(systemctl show -p MainPID --value {u} 2>/dev/null); echo \"pid=$pid\"; "
            "echo \"exe=$(readlink /proc/${pid:-0}/exe 2>/dev/null)\"; "
            f"echo \"binary=$(readlink -f {b} 2>/dev/null)\""
        )

    def process(self, output: list[str]) -> dict:
        found = self.default()
        for line in output:
            key, sep, value = line.partition("=")
            value = value.strip()
            if not sep or key not in found or not value:
                continue
            if key == "pid":
                found["pid"] = int(value) if value.isdigit() and int(value) > 0 else None
            elif key == "active":
                found["active"] = value if re.fullmatch(r"[a-z-]+", value) else found["active"]
            else:
                found[key] = value
        if found["pid"] is None:
            found["exe"] = None
        return found


class HttpStatus(FactBase[int | None]):
    """HTTP status code of a GET to `url` (5 s timeout), with curl.

    .. code:: python

        200    # 503 while llama-server loads the model

    Default: None (no answer: refused, timed out, or curl missing).
    """

    @staticmethod
    def default() -> None:
        return None

    def command(self, url: str) -> str:
        return f"curl -s -o /dev/null -m 5 -w '%{{http_code}}' {shlex.quote(url)} 2>/dev/null; true"

    def process(self, output: list[str]) -> int | None:
        text = "".join(output).strip()
        if not re.fullmatch(r"[1-5][0-9][0-9]", text):
            return None
        return int(text)


class LlamaServerLinks(FactBase[dict]):
    """Which RPC servers the running llama-server is connected to: its main process (the unit's
    MainPID), the --rpc list it was started with (LLAMA_ARG_RPC in /proc/<pid>/environ), and the
    peers of its established TCP connections (`ss -Htnp`, needs root). llama.cpp's RPC client holds
    one connection per RPC server while the model is loaded, and does not reconnect.

    .. code:: python

        {"pid": 4186, "rpc": ["10.151.0.12:50052", "10.151.0.13:50052"],
         "peers": ["10.151.0.12:50052", "10.151.0.13:50052"]}

    Default: {"pid": None, "rpc": None, "peers": []} (not running). "rpc" None: started without --rpc.
    """

    @staticmethod
    def default() -> dict:
        return {"pid": None, "rpc": None, "peers": []}

    def command(self, unit: str) -> str:
        return (
            f"pid=$(systemctl show -p MainPID --value {shlex.quote(unit)} 2>/dev/null); echo \"pid=$pid\"; "
            "if [ \"${pid:-0}\" -gt 0 ] 2>/dev/null; then "
            "tr '\\0' '\\n' < /proc/$pid/environ 2>/dev/null | grep '^LLAMA_ARG_RPC='; "
            "ss -Htnp 2>/dev/null | grep -F \"pid=$pid,\" | awk '$1 == \"ESTAB\" {print \"peer=\" $5}'; fi; true"
        )

    def process(self, output: list[str]) -> dict:
        found = self.default()
        peers = set()
        for line in output:
            key, sep, value = line.strip().partition("=")
            if key == "pid" and value.isdigit() and int(value) > 0:
                found["pid"] = int(value)
            elif key == "LLAMA_ARG_RPC":
                found["rpc"] = [ep.strip() for ep in value.split(",") if ep.strip()]
            elif key == "peer" and re.fullmatch(r"\[?[0-9A-Fa-f.:]+\]?:\d{1,5}", value):
                peers.add(value)
        if found["pid"] is None:
            return self.default()
        found["peers"] = sorted(peers)
        return found
