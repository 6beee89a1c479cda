"""deploys.runcache.FactMemo: each fact read once per run and host, forgotten when the host changes."""

from types import SimpleNamespace

from pyinfra.api.state import StateStage

from deploys.runcache import FactMemo


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

