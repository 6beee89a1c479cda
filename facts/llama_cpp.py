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
    """The stamp JSON of a build, or None when missing or incomplete."""
    try:
        stamp = json.loads(text)
    except ValueError:
        return None
    if not isinstance(stamp, dict) or not all(key in stamp for key in STAMP_KEYS):
        return None
    return {key: stamp[key] for key in STAMP_KEYS}


def parse_commit(lines: list[str]) -> str | None:
    text = "".join(lines).strip()
    return text if re.fullmatch(r"[0-9a-f]{40}", text) else None
