"""pyinfra facts for AMD Strix Halo hosts (amdgpu, kernel, IOMMU, firmware, ROCm).

Every fact reads files or package databases only, always exits 0, and returns
plain JSON-like data (dict/list/int/str/None), e.g.::

    from facts.amdgpu import GpuMemory
    cards = host.get_fact(GpuMemory)
"""
