"""Every option the built llama-server lists in its --help, for checking settings against the build.

Usage::

    from facts.llama_server_flags import LlamaServerFlags
    "--fit" in host.get_fact(LlamaServerFlags, binary="/opt/llama.cpp/current/bin/llama-server")
"""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase

from facts.llama_server import help_flags


class LlamaServerFlags(FactBase[list[str]]):
    """The option names (short and long) that start a line of `llama-server --help`, sorted.

    .. code:: python

        ["--alias", "--batch-size", "--fit", "--help", "--jinja", "-a", "-b", "-fit", ...]

    Default: [] (no binary, it does not run, or its --help lists no --help).
    """

    @staticmethod
    def default() -> list[str]:
        return []

    def command(self, binary: str) -> str:
        b = shlex.quote(binary)
        return f"if [ -x {b} ]; then {b} --help 2>&1 | grep -E '^-'; fi; true"

    def process(self, output: list[str]) -> list[str]:
        flags = help_flags(output)
        return sorted(flags) if "--help" in flags else []
