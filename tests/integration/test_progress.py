"""Long work through deploys/progress.py on lab hosts: progress lines while it runs, the log on failure."""

import re
from pathlib import Path

from lab.pyinfra_cli import pyinfra, results
from lab import lab

DEPLOY = '''
from pyinfra.api import operation
from deploys.progress import long_work

@operation(is_idempotent=False)
def work(script: str):
    yield from long_work("test-work", "counting", script, every_s=2)

work(name="Count slowly", script={script!r})
'''


def run_work(tmp_path: Path, inventory: str, script: str):
    deploy = tmp_path / "work.py"
    deploy.write_text(DEPLOY.format(script=script))
    return pyinfra(inventory, str(deploy), "--limit", "halo1")


def test_long_work_prints_progress_while_it_runs_and_succeeds(lab_inventory, tmp_path):
    proc = run_work(tmp_path, lab_inventory, "for i in 1 2 3 4 5 6 7 8; do echo \"[$i/8] step $i\"; sleep 1; done")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    progress = re.findall(r"counting: (\d+)% \((\d)/8 steps\), (\d+)s so far: \[\d/8\] step \d", output)
    assert len(progress) >= 2, output  # 8 s of work, a line every 2 s (the host is polled every 3 s)
    assert [int(p[1]) for p in progress] == sorted(int(p[1]) for p in progress)
    assert re.search(r"counting: done in \d+s", output)
    assert results(proc)["Count slowly"]["success"] == 1


def test_failed_long_work_names_its_exit_status_last_lines_and_log(lab_inventory, tmp_path):
    proc = run_work(tmp_path, lab_inventory, "echo compiling; echo 'error: no such file' >&2; exit 3")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "halo1: counting failed (exit status 3)" in output
    assert "error: no such file" in output
    assert "The whole log is on halo1 in /var/lib/halo-provision/work/test-work/log" in output
    log = lab.ssh("halo1", "cat /var/lib/halo-provision/work/test-work/log").stdout
    assert log.split("\n")[:2] == ["compiling", "error: no such file"]
