"""deploys/scripts/rpc-cache-prune.sh, run for real on files made here: the least recently used go first."""

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploys" / "scripts" / "rpc-cache-prune.sh"
MIB = 1024 * 1024


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """Five 1 MiB tensors, f0 used longest ago, f4 most recently (access times 1000 s apart)."""
    directory = tmp_path / "rpc"
    directory.mkdir()
    for i in range(5):
        tensor = directory / f"f{i}"
        tensor.write_bytes(b"\0" * MIB)
        os.utime(tensor, (1_700_000_000 + 1000 * i, 1_700_000_000))
    return directory


def prune(directory: Path, limit: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(SCRIPT), str(directory), limit], capture_output=True, text=True, check=True)


def used(directory: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(directory)], capture_output=True, text=True).stdout.split()[0])


def test_a_cache_under_its_limit_is_left_alone(cache):
    assert prune(cache, str(10 * MIB)).stdout == ""
    assert sorted(p.name for p in cache.iterdir()) == ["f0", "f1", "f2", "f3", "f4"]


def test_the_least_recently_used_tensors_go_until_the_rest_fits(cache):
    before = used(cache)
    out = prune(cache, str(2 * MIB + 8192)).stdout
    assert sorted(p.name for p in cache.iterdir()) == ["f3", "f4"]
    assert used(cache) <= 2 * MIB + 8192
    assert out == f"rpc-cache-prune: {cache} was {before} bytes, now {before - 3 * MIB} (at most {2 * MIB + 8192})\n"


def test_limit_zero_empties_the_cache(cache):
    prune(cache, "0")
    assert list(cache.iterdir()) == []


def test_auto_is_a_tenth_of_the_file_system(cache):
    prune(cache, "auto")  # a tmp file system is far larger than 50 MiB: nothing goes
    assert len(list(cache.iterdir())) == 5


def test_a_missing_cache_is_no_error(tmp_path):
    assert prune(tmp_path / "none", "0").returncode == 0
