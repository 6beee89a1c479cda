"""The state of long work started in the background on a host by deploys/progress.py.

Usage::

    from facts.work import WorkStatus
    host.get_fact(WorkStatus, run_dir="/var/lib/halo-provision/work/llama-cpp-build")
    # {"run": None, "exit_status": None, "stage": "compile llama-server and ggml-rpc-server",
    #  "tail": ["[120/380] Building CXX object ..."]}

A work script names its stages with lines `==> <stage>` in its log; the last one is `stage`.
"""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase

from facts import sections

TAIL_LINES = 20


class WorkStatus(FactBase[dict]):
    """The run that last ended in `run_dir` (its token) with its exit status, and the log's last lines.

    .. code:: python

        {"run": "3f2a9c1d", "exit_status": 0, "stage": "switch current",
         "tail": ["llama.cpp b10760 (0123abcd...) serving from ..."]}

    Default (no output): {"run": None, "exit_status": None, "stage": None, "tail": []}; an unreadable
    exit file reads as no run ended; a log without `==> ` lines has no stage.
    """

    @staticmethod
    def default() -> dict:
        return {"run": None, "exit_status": None, "stage": None, "tail": []}

    def command(self, run_dir: str, tail_lines: int = TAIL_LINES) -> str:
        d = shlex.quote(run_dir)
        return (f"echo '## exit'; cat {d}/exit 2>/dev/null; "
                f"echo '## stage'; grep -a '^==> ' {d}/log 2>/dev/null | tail -n 1; "
                f"echo '## tail'; tail -n {int(tail_lines)} {d}/log 2>/dev/null || true")

    def process(self, output: list[str]) -> dict:
        found = sections(output)
        words = " ".join(found.get("exit", [])).split()  # "<run token> <exit status>"
        ended = len(words) == 2 and words[1].isdigit()
        stage = next((line[4:].strip() for line in found.get("stage", []) if line.startswith("==> ")), None)
        return {"run": words[0] if ended else None, "exit_status": int(words[1]) if ended else None,
                "stage": stage or None, "tail": found.get("tail", [])}
