"""Long work on a host (a build, a download, a model loading) with progress in pyinfra's normal output.

    @operation(is_idempotent=False)
    def build(script: str):
        yield from long_work("llama-cpp-build", "build llama.cpp", script)

The script runs in the background on the host, its output in a log file, while the operation prints
a progress line at least every `every_s` seconds (30 by default): what runs, how far (the log's last
line; `[n/m]` steps as a percentage; the stage the script last named with a line `==> <stage>`),
and the time it has taken. When it ends, the operation succeeds or fails with the exit status, the
log's last lines and the log's path on the host.

Its files stay in /var/lib/halo-provision/work/<name>/ (script, log, exit). The work runs under
`setsid`, so a dropped SSH connection does not stop it, and under `flock`, so two runs on one host
take turns; each start has a token of its own, and the operation waits for its own run's end.
"""

from __future__ import annotations

import re
import shlex
import time
import uuid
from io import StringIO

import gevent
from pyinfra import logger
from pyinfra.api import FileUploadCommand, FunctionCommand, StringCommand

from facts.work import TAIL_LINES, WorkStatus

WORK_DIR = "/var/lib/halo-provision/work"
PROGRESS_EVERY_S = 30  # a line at least this often while the work runs
POLL_S = 3  # how often the host is asked (one short command)
_STEPS = re.compile(r"^\[(\d+)/(\d+)\]")  # ninja's "[n/m] Building ..."


def run_dir(name: str) -> str:
    """The host directory of work `name`.

    >>> run_dir("llama-cpp-build")
    '/var/lib/halo-provision/work/llama-cpp-build'
    """
    return f"{WORK_DIR}/{name}"


def start_command(directory: str, token: str) -> str:
    """Start `<directory>/script` in the background; its output goes to `log`, "<token> <status>" to `exit`.

    >>> print(start_command("/w/x", "ab12"))  # doctest: +NORMALIZE_WHITESPACE
    setsid nohup flock /w/x/lock sh -c 'bash "$1/script" > "$1/log" 2>&1; echo "$2 $?" > "$1/exit"'
    _ /w/x ab12 </dev/null >/dev/null 2>&1 &
    """
    wrapper = 'bash "$1/script" > "$1/log" 2>&1; echo "$2 $?" > "$1/exit"'
    return (f"setsid nohup flock {shlex.quote(directory + '/lock')} sh -c {shlex.quote(wrapper)} "
            f"_ {shlex.quote(directory)} {shlex.quote(token)} </dev/null >/dev/null 2>&1 &")


def duration(seconds: float) -> str:
    """Seconds as people read them.

    >>> duration(42.4), duration(151), duration(3725)
    ('42s', '2m31s', '1h02m05s')
    """
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"


def progress_line(what: str, tail: list[str], elapsed: float, stage: str | None = None) -> str:
    """What runs (and its stage), how far, for how long.

    >>> progress_line("build llama.cpp", ["[95/380] Building CXX object ggml-cpu.c.o"], 151, "compile")
    'build llama.cpp: compile, 25% (95/380 steps), 2m31s so far: [95/380] Building CXX object ggml-cpu.c.o'
    >>> progress_line("build llama.cpp", ["==> configure (cmake)"], 12, "configure (cmake)")
    'build llama.cpp: configure (cmake), 12s so far'
    >>> progress_line("download model.gguf", [], 30)
    'download model.gguf: 30s so far'
    """
    last = next((line.strip() for line in reversed(tail) if line.strip()), "")
    if last.startswith("==> "):
        last = ""  # the stage, said already
    steps = _STEPS.match(last)
    far = f" {int(steps[1]) * 100 // max(int(steps[2]), 1)}% ({steps[1]}/{steps[2]} steps)," if steps else ""
    return (f"{what}:" + (f" {stage}," if stage else "") + f"{far} {duration(elapsed)} so far"
            + (f": {last[:200]}" if last else ""))


def _wait(state, host, directory: str, token: str, what: str, every_s: float, timeout_s: float | None,
          tail_lines: int = TAIL_LINES) -> bool:
    """Poll the host until this run's exit file appears; print progress; True when it exited 0."""
    started = last_shown = time.monotonic()
    while True:
        gevent.sleep(POLL_S)
        status = host.get_fact(WorkStatus, run_dir=directory, tail_lines=tail_lines)
        now = time.monotonic()
        if status["run"] == token:
            break
        if timeout_s is not None and now - started > timeout_s:
            host.log_styled(f"{host.name}: {what} did not end within {duration(timeout_s)}; it goes on in "
                            f"the background. Its log: {directory}/log", fg="red", log_func=logger.error)
            return False
        if now - last_shown >= every_s:
            host.log(progress_line(what, status["tail"], now - started, status["stage"]))
            last_shown = now
    took = duration(time.monotonic() - started)
    if status["exit_status"] == 0:
        host.log(f"{what}: done in {took}")
        return True
    tail = "\n".join(f"    {line}" for line in status["tail"])
    at = f" in its stage \"{status['stage']}\"" if status["stage"] else ""
    host.log_styled(f"{host.name}: {what} failed (exit status {status['exit_status']}) after {took}{at}. Its last "
                    f"lines:\n{tail}\nThe whole log is on {host.name} in {directory}/log", fg="red",
                    log_func=logger.error)
    return False


def long_work(name: str, what: str, script: str, every_s: float = PROGRESS_EVERY_S,
              timeout_s: float | None = None, tail_lines: int = TAIL_LINES):
    """The commands of an operation that runs `script` (bash) as work `name`, described as `what`;
    a failure shows the log's last `tail_lines` lines."""
    directory = run_dir(name)
    token = uuid.uuid4().hex[:12]
    yield StringCommand("mkdir", "-p", "-m", "0700", directory)
    yield FileUploadCommand(StringIO(script), f"{directory}/script")
    yield StringCommand(start_command(directory, token))
    yield FunctionCommand(_wait, (directory, token, what, every_s, timeout_s, tail_lines), {})
