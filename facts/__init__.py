"""pyinfra facts for AMD Strix Halo hosts (amdgpu, kernel, IOMMU, firmware, ROCm).

Every fact reads files or package databases only, always exits 0, and returns
plain JSON-like data (dict/list/int/str/None), e.g.::

    from facts.amdgpu import GpuMemory
    cards = host.get_fact(GpuMemory)
"""


def sections(output: list[str]) -> dict[str, list[str]]:
    """Split a fact command's output at its `## name` marker lines: {"name": [lines after it]}.

    >>> sections(["## stamp", "{}", "## ref", "abc"])
    {'stamp': ['{}'], 'ref': ['abc']}
    """
    found: dict[str, list[str]] = {}
    current = None
    for line in output:
        if line.startswith("## "):
            current = found.setdefault(line[3:].strip(), [])
        elif current is not None:
            current.append(line)
    return found
