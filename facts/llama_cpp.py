"""llama.cpp on a host: the build `current` points at, and what the source clone knows of a ref.

Layout under the prefix (default /opt/llama.cpp; see deploys/llama_cpp.py):

    src/                      git clone of llama_cpp_repo
    builds/<commit12>-<hash>/ one build per commit + flags: bin/, halo-build.json (the stamp)
    current -> builds/<id>    the build that serves; moved only after a build ran

Usage::

    from facts.llama_cpp import LlamaCppInstall
    info = host.get_fact(LlamaCppInstall, prefix="/opt/llama.cpp", ref="b10760")
    info["current"]["rpc_server"]      # /opt/llama.cpp/builds/0123456789ab-1a2b3c4d/bin/ggml-rpc-server
"""

from __future__ import annotations

import json
import re
import shlex

from pyinfra.api import FactBase

from facts import sections

STAMP = "halo-build.json"
STAMP_KEYS = ("id", "commit", "ref", "backend", "flags", "rpc_server", "server")


class LlamaCppInstall(FactBase[dict]):
    """The current llama.cpp build (its stamp) and the commit `ref` names in the source clone.

    Returns:

    .. code:: python

        {"current": {"id": "0123456789ab-1a2b3c4d", "commit": "0123...", "ref": "b10760", "backend": "cpu",
                     "flags": ["-DGGML_RPC=ON", ...], "rpc_server": "/opt/llama.cpp/builds/.../ggml-rpc-server",
                     "server": "/opt/llama.cpp/builds/.../llama-server"},
         "ref_commit": "0123..."}

    Default: {"current": None, "ref_commit": None} (nothing built, no clone, or ref unknown to the clone).
    A stamp that is not valid JSON or lacks a key counts as no current build.
    """

    @staticmethod
    def default() -> dict:
        return {"current": None, "ref_commit": None}

    def command(self, prefix: str, ref: str) -> str:
        p, r = shlex.quote(prefix), shlex.quote(ref + "^{commit}")
        return (
            f"echo '## stamp'; cat {p}/current/{STAMP} 2>/dev/null; echo; "
            f"echo '## ref'; git -C {p}/src rev-parse --verify --quiet {r} 2>/dev/null; true"
        )

    def process(self, output: list[str]) -> dict:
        found = sections(output)
        return {"current": parse_stamp("\n".join(found.get("stamp", []))),
                "ref_commit": parse_commit(found.get("ref", []))}


def parse_stamp(text: str) -> dict | None:
    """The stamp JSON of a build, or None when missing or incomplete. Builds stamped since the RPC
    protocol was recorded also have "rpc_protocol" ("7.0.0"; "" when the source did not say)."""
    try:
        stamp = json.loads(text)
    except ValueError:
        return None
    if not isinstance(stamp, dict) or not all(key in stamp for key in STAMP_KEYS):
        return None
    return {key: stamp[key] for key in (*STAMP_KEYS, "rpc_protocol") if key in stamp}


def parse_commit(lines: list[str]) -> str | None:
    text = "".join(lines).strip()
    return text if re.fullmatch(r"[0-9a-f]{40}", text) else None


class RunningBuilds(FactBase[dict]):
    """The llama.cpp build each of `units` runs now: its main process's executable, the build
    directory that holds it (builds/<id>/bin/...: the build's id), the RPC protocol version the
    build's stamp records, and the version that process printed at start ("Starting RPC server
    vX.Y.Z", in the unit's journal; RPC servers only).

    .. code:: python

        {"halo-rpc@50052.service": {"pid": 812, "exe": "/opt/llama.cpp/builds/0123456789ab-1a2b3c4d/bin/ggml-rpc-server",
                                    "build": "0123456789ab-1a2b3c4d", "stamp_protocol": "7.0.0",
                                    "started_protocol": "7.0.0"}}

    A unit with no running process reads {"pid": None, "exe": None, "build": None, ...None}.
    Default: {} (no units asked).
    """

    @staticmethod
    def default() -> dict:
        return {}

    def command(self, units: list[str]) -> str:
        script = (
            'for u in "$@"; do pid=$(systemctl show -p MainPID --value "$u" 2>/dev/null); '
            'echo "## $u"; [ "${pid:-0}" -gt 0 ] 2>/dev/null || continue; echo "pid=$pid"; '
            'exe=$(readlink "/proc/$pid/exe" 2>/dev/null); echo "exe=$exe"; '
            'echo "stamp=$(tr -d "\\n" < "${exe%/bin/*}/' + STAMP + '" 2>/dev/null)"; '
            'journalctl "_SYSTEMD_UNIT=$u" "_PID=$pid" -o cat --no-pager 2>/dev/null '
            '| grep -o "^Starting RPC server v[0-9][0-9.]*" | tail -n 1; done'
        )
        return f"bash -c {shlex.quote(script)} units " + " ".join(map(shlex.quote, units)) + "; true"

    def process(self, output: list[str]) -> dict:
        found = {}
        for unit, lines in sections(output).items():
            info = {"pid": None, "exe": None, "build": None, "stamp_protocol": None, "started_protocol": None}
            for line in lines:
                key, _, value = line.partition("=")
                if key == "pid" and value.isdigit():
                    info["pid"] = int(value)
                elif key == "exe" and value.startswith("/"):
                    info["exe"] = value
                    match = re.search(r"/builds/([0-9a-f]{12}-[0-9a-f]{8})/bin/[^/]+$", value.removesuffix(" (deleted)"))
                    info["build"] = match[1] if match else None
                elif key == "stamp":
                    info["stamp_protocol"] = _protocol((parse_stamp(value) or {}).get("rpc_protocol"))
                elif line.startswith("Starting RPC server v"):
                    info["started_protocol"] = _protocol(line.removeprefix("Starting RPC server v"))
            if info["pid"] is None:
                info = {key: None for key in info}
            found[unit] = info
        return found


def _protocol(text) -> str | None:
    return text if isinstance(text, str) and re.fullmatch(r"\d+\.\d+\.\d+", text) else None
