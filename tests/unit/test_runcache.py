"""deploys.runcache.FactMemo: each fact read once per run and host, forgotten when the host changes."""

import hashlib
import subprocess
from types import SimpleNamespace

from pyinfra.api import StringCommand
from pyinfra.api.state import StateStage
from pyinfra.facts.files import File, Sha1File
from pyinfra.facts.server import Groups, Os

from deploys.runcache import FactMemo, prefetch


class Uptime:  # a fact class stands for itself: the memo needs its name and module only
    pass


class HttpStatus:  # in VOLATILE_FACTS: never kept
    pass


class FakeHost:
    """Counts the reads that reach the host; run_shell_command stands for an operation's command."""

    def __init__(self, stage=StateStage.Prepare):
        self.name, self.reads = "halo1", []
        self.state = SimpleNamespace(current_stage=stage, inventory=[self])

    def get_fact(self, fact, *args, **kwargs):
        self.reads.append((fact.__name__, kwargs))
        self.run_shell_command("the fact's command")  # as pyinfra's fact loader does
        return {"value": len(self.reads)}

    def run_shell_command(self, *args, **kwargs):
        return True, []

    put_file = get_file = rsync = run_shell_command


def test_a_fact_is_read_once_per_set_of_arguments_and_answers_are_copies():
    host = FakeHost()
    FactMemo.install(host.state)
    first = host.get_fact(Uptime, path="/a")
    first["value"] = "changed by a caller"
    assert host.get_fact(Uptime, path="/a") == {"value": 1}
    assert host.get_fact(Uptime, path="/b") == {"value": 2}
    assert host.reads == [("Uptime", {"path": "/a"}), ("Uptime", {"path": "/b"})]


def test_install_twice_keeps_one_memo():
    host = FakeHost()
    FactMemo.install(host.state)
    FactMemo.install(host.state)
    host.get_fact(Uptime)
    host.get_fact(Uptime)
    assert len(host.reads) == 1


def test_volatile_facts_are_always_read():
    host = FakeHost()
    FactMemo.install(host.state)
    host.get_fact(HttpStatus, url="http://x/health")
    host.get_fact(HttpStatus, url="http://x/health")
    assert len(host.reads) == 2


def test_an_operation_command_while_executing_forgets_what_was_kept():
    host = FakeHost(StateStage.Execute)
    FactMemo.install(host.state)
    host.get_fact(Uptime)
    host.get_fact(Uptime)  # only fact reads since: kept
    host.put_file("local", "/etc/x")  # an operation changes the host
    assert host.get_fact(Uptime) == {"value": 2}
    host.run_shell_command("systemctl restart x")
    assert host.get_fact(Uptime) == {"value": 3}
    assert len(host.reads) == 3


def test_while_prepared_nothing_is_forgotten():
    host = FakeHost(StateStage.Prepare)
    FactMemo.install(host.state)
    host.get_fact(Uptime)
    host.run_shell_command("a command while preparing")
    host.get_fact(Uptime)
    assert len(host.reads) == 1


class LocalHost(FakeHost):
    """Runs fact commands with bash on this machine, as a host's shell would."""

    def __init__(self, stage=StateStage.Prepare):
        super().__init__(stage)
        self.commands = []

    def get_fact(self, fact, *args, **kwargs):
        instance = fact()
        ok, output = self.run_shell_command(StringCommand(instance.command(**kwargs)))
        return instance.process(output.stdout_lines) if output.stdout_lines else instance.default()

    def run_shell_command(self, command, **kwargs):
        text = command.get_raw_value() if hasattr(command, "get_raw_value") else str(command)
        self.commands.append(text)
        proc = subprocess.run(["bash", "-c", text], capture_output=True, text=True)
        return proc.returncode == 0, SimpleNamespace(stdout_lines=proc.stdout.splitlines())


def test_prefetch_reads_several_facts_in_one_command_with_the_answers_of_single_reads(tmp_path):
    target = tmp_path / "unit file"
    target.write_text("[Unit]\n")
    reads = [(Os, {}), (Groups, {}), (Sha1File, {"path": str(target)}), (File, {"path": str(tmp_path / "absent")})]
    alone = LocalHost()
    expected = [alone.get_fact(cls, **kwargs) for cls, kwargs in reads]
    host = LocalHost()
    FactMemo.install(host.state)
    prefetch(reads, host)
    assert len(host.commands) == 1
    assert [host.get_fact(cls, **kwargs) for cls, kwargs in reads] == expected
    assert len(host.commands) == 1  # every answer came from the one command
    assert expected[2] == hashlib.sha1(b"[Unit]\n").hexdigest() and expected[3] is None


def test_prefetch_leaves_a_failing_fact_to_its_own_read():
    class Failing(Os):
        def command(self):
            return "echo partial; exit 3"

    host = LocalHost()
    FactMemo.install(host.state)
    prefetch([(Os, {}), (Failing, {})], host)
    host.get_fact(Os)
    assert len(host.commands) == 1
    host.get_fact(Failing)  # not kept from the failed part: read on its own (pyinfra then reports it)
    assert len(host.commands) == 2


def test_live_prefetch_answers_volatile_facts_once_each():
    class Clock(Os):  # a fact that moves by itself: each read may differ
        volatile = True

        def command(self):
            return "date +%s%N"

    host = LocalHost(StateStage.Execute)
    FactMemo.install(host.state)
    prefetch([(Clock, {}), (Os, {})], host)  # not live: the volatile fact is left out
    assert len(host.commands) == 1
    prefetch([(Clock, {}), (Os, {})], host, live=True)  # live: only the volatile one, Os is kept already
    assert len(host.commands) == 2
    first = host.get_fact(Clock)
    assert len(host.commands) == 2  # answered by the live prefetch
    second = host.get_fact(Clock)  # that answer served one read only
    assert len(host.commands) == 3 and int(second) > int(first)
    prefetch([(Clock, {})], host, live=True)
    host.run_shell_command("systemctl restart x")  # an operation ran: the live answer is stale
    host.get_fact(Clock)
    assert len(host.commands) == 6


def test_a_read_during_a_prefetch_waits_for_its_answer():
    import gevent

    class SlowHost(LocalHost):
        def run_shell_command(self, command, **kwargs):
            gevent.sleep(0.05)  # the remote command takes a while: other greenlets run meanwhile
            return super().run_shell_command(command, **kwargs)

    host = SlowHost()
    FactMemo.install(host.state)
    prefetching = gevent.spawn(prefetch, [(Os, {}), (Groups, {})], host)
    gevent.sleep(0.01)  # the prefetch's command is under way
    reader = gevent.spawn(host.get_fact, Os)  # another host's greenlet (plan_builds) reads one of its facts
    gevent.joinall([prefetching, reader], raise_error=True)
    assert reader.value == "Linux" and len(host.commands) == 1
