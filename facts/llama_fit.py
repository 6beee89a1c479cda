"""llama.cpp's own answer to "does the model fit?": the built `llama-fit-params`, run on the head with
llama-server's settings (its LLAMA_ARG_* environment), once printing its estimate per device and once
fitting (the arguments it would change, or a failure).

Usage::

    from facts.llama_fit import LlamaFitParams
    host.get_fact(LlamaFitParams, binary="/opt/llama.cpp/current/bin/llama-fit-params",
                  env={"LLAMA_ARG_MODEL": "/srv/m.gguf", "LLAMA_ARG_RPC": "10.151.0.12:50052", ...})
"""

from __future__ import annotations

import re
import shlex

from pyinfra.api import FactBase

UNIT = "halo-llama-server.service"
TIMEOUT_S = 120
_ESTIMATE = re.compile(r"^(\S+(?: \S+)*?) ([0-9]+) ([0-9]+) ([0-9]+)$")


class LlamaFitParams(FactBase[dict]):
    """llama-fit-params' estimate (MiB per device: model, context, compute; "Host" is system memory) and
    its fit (the arguments it prints, e.g. "-c 16384 -ngl 99", and whether it succeeded). "state":
    "absent" (this build has no llama-fit-params), "busy" (llama-server runs and holds the RPC servers,
    which serve one client at a time: not run) or "ran".

    .. code:: python

        {"state": "ran", "devices": [{"name": "RPC0[10.151.0.12:50052]", "model": 1, "context": 12, "compute": 1}],
         "host": {"model": 0, "context": 0, "compute": 0}, "estimated": True, "fitted": "-c 16384 -ngl 99",
         "fit_ok": True}

    Default: {"state": "absent", "devices": [], "host": None, "estimated": False, "fitted": None, "fit_ok": False}.
    """

    @staticmethod
    def default() -> dict:
        return {"state": "absent", "devices": [], "host": None, "estimated": False, "fitted": None, "fit_ok": False}

    def command(self, binary: str, env: dict[str, str]) -> str:
        script = (
            'b=$1; shift; [ -x "$b" ] || exit 0; '
            f'if [ -n "$LLAMA_ARG_RPC" ] && systemctl is-active --quiet {UNIT}; then echo busy; exit 0; fi; '
            f'echo "## estimate"; timeout {TIMEOUT_S} env "$@" "$b" -fitp on </dev/null 2>/dev/null; '
            'echo "## estimate-status $?"; '
            f'echo "## fit"; timeout {TIMEOUT_S} env "$@" "$b" </dev/null 2>/dev/null; echo "## fit-status $?"'
        )
        rpc = env.get("LLAMA_ARG_RPC", "")
        pairs = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
        return (f"LLAMA_ARG_RPC={shlex.quote(rpc)} bash -c {shlex.quote(script)} _ {shlex.quote(binary)} "
                f"{pairs}; true")

    def process(self, output: list[str]) -> dict:
        found = self.default()
        section = None
        for line in (raw.strip() for raw in output):
            if line == "busy":
                found["state"] = "busy"
            elif line in ("## estimate", "## fit"):
                section, found["state"] = line[3:], "ran"
            elif line.startswith("## estimate-status "):
                found["estimated"] = line.split()[-1] == "0" and bool(found["devices"] or found["host"])
            elif line.startswith("## fit-status "):
                found["fit_ok"] = line.split()[-1] == "0" and found["fitted"] is not None
            elif section == "estimate" and (match := _ESTIMATE.match(line)):
                sizes = {"model": int(match[2]), "context": int(match[3]), "compute": int(match[4])}
                if match[1] == "Host":
                    found["host"] = sizes
                else:
                    found["devices"].append({"name": match[1], **sizes})
            elif section == "fit" and line.startswith("-c "):
                found["fitted"] = line
        return found
