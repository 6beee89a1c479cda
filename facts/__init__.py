"""pyinfra facts for AMD Strix Halo hosts (amdgpu, kernel, IOMMU, firmware, ROCm).

Every fact reads files or package databases only, always exits 0, and returns
plain JSON-like data (dict/list/int/str/None), e.g.::

    from facts.amdgpu import GpuMemory
    cards = host.get_fact(GpuMemory)
"""


def parts(output: list[str]) -> list[tuple[str, list[str]]]:
    """Split a fact command's output at its `## name` marker lines, in order, repeated names kept.

    >>> parts(["## node 1", "a 1", "## mem_bank", "size 2", "## node 2", "## mem_bank"])
    [('node 1', ['a 1']), ('mem_bank', ['size 2']), ('node 2', []), ('mem_bank', [])]
    """
    found: list[tuple[str, list[str]]] = []
    for line in output:
        marker = line.strip()
        if marker.startswith("## "):
            found.append((marker[3:].strip(), []))
        elif found:
            found[-1][1].append(line)
    return found


def sections(output: list[str]) -> dict[str, list[str]]:
    """The same by name (one section per name): {"name": [lines after it]}.

    >>> sections(["## stamp", "{}", "## ref", "abc"])
    {'stamp': ['{}'], 'ref': ['abc']}
    """
    found: dict[str, list[str]] = {}
    for name, lines in parts(output):
        found.setdefault(name, []).extend(lines)
    return found
