"""Several facts' commands run as one remote command, each part's output and exit status kept apart.

Usage (deploys.runcache.prefetch builds the commands from fact classes and feeds each part to its
own fact's process())::

    from facts.together import FactsTogether
    host.get_fact(FactsTogether, commands=["uname -s", "cat /etc/hostname"])
    # [{"index": 0, "status": 0, "lines": ["Linux"]}, {"index": 1, "status": 0, "lines": ["halo1"]}]
"""

from __future__ import annotations

import re
import uuid

from pyinfra.api import FactBase

_MARK = re.compile(r"(@@halo-provision-fact-[0-9a-f]{12}) ([0-9]+) ([0-9]+)$")  # ends a line


class FactsTogether(FactBase[list[dict]]):
    """Each command of `commands` run in turn (stdin closed, stderr dropped), followed by a marker line
    with its index and exit status. The marker carries a new random tag each time, read back from the
    last line, so no part's output can pass for one. A part without its marker is left out. Output
    without a final newline (`curl -w '%{http_code}'`) shares its line with the marker: it is still
    the part's last line.

    .. code:: python

        [{"index": 0, "status": 0, "lines": ["Linux"]}, {"index": 1, "status": 1, "lines": []}]

    Default (no output): [].
    """

    @staticmethod
    def default() -> list[dict]:
        return []

    def command(self, commands: list[str]) -> str:
        mark = f"@@halo-provision-fact-{uuid.uuid4().hex[:12]}"
        return "".join(f'( {c} ) 2>/dev/null </dev/null; echo "{mark} {i} $?"; ' for i, c in enumerate(commands)) + "true"

    def process(self, output: list[str]) -> list[dict]:
        last = _MARK.search(output[-1].strip()) if output else None
        if last is None:
            return []
        found, mine = [], []
        for line in output:
            match = _MARK.search(line.rstrip())
            if match and match[1] == last[1]:
                if line[:match.start()]:  # the part's output ended without a newline
                    mine.append(line[:match.start()])
                found.append({"index": int(match[2]), "status": int(match[3]), "lines": mine})
                mine = []
            else:
                mine.append(line)
        return found
