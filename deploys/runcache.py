"""Values kept for one pyinfra run (one State) and shared by all its hosts: the one per-run cache.

    from deploys.runcache import once_per_run, run_store
    plans = once_per_run("llama_cpp_plans", lambda: plan_builds(host.state))  # computed by the first host
    reports = run_store("verify_reports")                                     # a dict for this run
    prefetch(file_reads(UNIT_PATH) + unit_reads(UNIT))  # a step's facts in one command (FactMemo below)

Facts are kept here too: FactMemo answers a repeated `host.get_fact` from memory, and prefetch reads
the facts that belong together in one remote command (facts.together), so a no-change run costs a
few commands per host instead of one per fact per operation.

Why it is needed: pyinfra 3 prepares each host's deploy in its own greenlet, all in parallel
(pyinfra_cli.util.load_deploy_file spawns one per host), and keeps no store per run of its own. Its
`_run_once` argument runs an *operation* on the first host only, when the run executes; it cannot
plan before operations are added, and its state callbacks report connections and operations only.
So what is computed once per run while it is prepared (the validated settings of every host; who
builds llama.cpp, from every host's facts; the workers' GPU memory) and what operations hand to each
other when they run (verify's reports) lives here, in a dict on the State, under a lock where the
computation reads facts (a fact read lets the other hosts' greenlets run meanwhile).
"""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Callable
from typing import TypeVar

import gevent.lock
from pyinfra import host
from pyinfra.api.state import StateStage
from pyinfra.facts.files import Directory, File, Sha1File
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus

from facts.together import FactsTogether

T = TypeVar("T")
_ATTR = "_halo_provision_run"  # the State attribute holding {"locks": {...}, "stores": {...}}


def _run(state=None) -> dict:
    state = state if state is not None else host.state
    return state.__dict__.setdefault(_ATTR, {"locks": {}, "stores": {}})  # no I/O here: no greenlet switch


def run_store(key: str, state=None) -> dict:
    """A dict that lives as long as this pyinfra run (`state`, else the current host's).

    >>> from pyinfra.api import State
    >>> state = State()
    >>> run_store("x", state)["a"] = 1
    >>> run_store("x", state), run_store("x", State())
    ({'a': 1}, {})
    """
    return _run(state)["stores"].setdefault(key, {})


def run_lock(key: str, state=None) -> gevent.lock.RLock:
    """A lock shared by all hosts of this run: hold it around work meant to happen once per run."""
    return _run(state)["locks"].setdefault(key, gevent.lock.RLock())


def once_per_run(key: str, compute: Callable[[], T], state=None) -> T:
    """compute() once per pyinfra run; hosts prepared meanwhile wait for its result."""
    with run_lock(key, state):
        results = run_store("once_per_run", state)
        if key not in results:
            results[key] = compute()
        return results[key]


# Facts whose value moves by itself (a service starting, a probe over the network, a job in the
# background): always read from the host, never from the memo below.
VOLATILE_FACTS = frozenset({"HttpStatus", "LlamaServerStatus", "LlamaServerLinks", "RunningBuilds", "UnitStates",
                            "TcpListeners", "RpcReach", "WorkStatus", "LlamaFitParams"})


class FactMemo:
    """Each fact read once per run and host: `host.get_fact` answers a repeated read from memory.

        FactMemo.install(host.state)  # once per run, before the first fact read (deploys.settings does it)

    Safe by construction, for pyinfra 3, which caches no fact (every `host.get_fact` runs a command) and
    evaluates an operation, reading its facts, when it runs (and, when asked to check for changes, once
    more while the run is prepared):
    - while the run is prepared nothing on the hosts changes, so every read of a fact with the same
      arguments gives the same answer: the first one is kept;
    - when the run executes, a kept answer stays valid until the host runs anything but a fact read
      (an operation's command, upload or download, a function command that reaches the host): that
      forgets everything kept for that host, so an operation always sees what earlier ones changed;
    - facts in VOLATILE_FACTS (and any fact class with `volatile = True`) are never kept; a live
      prefetch reads several of them in one command, and each answer serves the next read only.
    Answers are deep copies: a caller changing one does not change the next.
    """

    def __init__(self, host):
        self.host, self.kept, self.lock = host, {}, gevent.lock.RLock()
        self.fresh: dict = {}  # volatile facts of a live prefetch, each given to its next read only
        self.reading: set[int] = set()  # greenlets inside a fact read of this host
        self.get_fact = host.get_fact
        host.get_fact = self.read
        for name in ("run_shell_command", "put_file", "get_file", "rsync"):
            setattr(host, name, self._forgetting(getattr(host, name)))

    @classmethod
    def install(cls, state) -> None:
        """Install the memo on every host of this run's inventory (once; later calls do nothing)."""
        memos = run_store("fact_memo", state)
        for one in state.inventory:
            if one.name not in memos:
                memos[one.name] = cls(one)

    def read(self, fact, *args, **kwargs):
        key = self._key(fact, args, kwargs)
        if _volatile(fact):
            return self.fresh.pop(key) if key in self.fresh else self._read(fact, args, kwargs)
        with self.lock:  # two greenlets asking for the same fact: the second waits for the first's answer
            if key not in self.kept:
                self.kept[key] = self._read(fact, args, kwargs)
            return copy.deepcopy(self.kept[key])

    @staticmethod
    def _key(fact, args, kwargs) -> tuple:
        return fact.__module__, fact.__name__, repr(tuple(args)), repr(sorted(kwargs.items()))

    def _read(self, fact, args, kwargs):
        me = id(gevent.getcurrent())
        self.reading.add(me)
        try:
            return self.get_fact(fact, *args, **kwargs)
        finally:
            self.reading.discard(me)

    def _forgetting(self, method):
        def call(*args, **kwargs):
            if id(gevent.getcurrent()) not in self.reading and self.host.state.current_stage == StateStage.Execute:
                self.kept.clear()
                self.fresh.clear()
            return method(*args, **kwargs)
        return call

    def prefetch(self, reads, live: bool = False) -> None:
        """Read the facts in `reads` ([(FactClass, {kwargs}), ...]) in one remote command and keep each
        answer as if it had been read alone (facts kept already, volatile ones and short facts are left
        out; one whose command fails or is missing is left for its own read, with pyinfra's handling).
        `live`: read the volatile ones too, each answer kept for its next read only (read it right away)."""
        pending, parts = [], []
        for cls, kwargs in reads:
            key = self._key(cls, (), kwargs)
            if (key in self.kept or key in [p[0] for p in pending] or not hasattr(cls, "process")
                    or _volatile(cls) != live):
                continue
            fact = cls()
            command = _raw(fact.command(**kwargs) if callable(fact.command) else fact.command)
            needs = fact.requires_command(**kwargs) if callable(fact.requires_command) else fact.requires_command
            if needs:
                command = f"if command -v {_raw(needs)} >/dev/null 2>&1; then ( {command} ); else exit 127; fi"
            pending.append((key, fact))
            parts.append(command)
        if not pending:
            return
        with self.lock:  # another host's greenlet reading one of these facts meanwhile waits for this answer
            for part in self._read(FactsTogether, (), {"commands": parts}):  # one command; faked facts: []
                key, fact = pending[part["index"]]
                store = self.fresh if live else self.kept
                if part["status"] != 0 or key in store:
                    continue
                try:
                    store[key] = fact.process(part["lines"]) if part["lines"] else fact.default()
                except Exception:  # noqa: BLE001  its own read reports it, as pyinfra does
                    continue


def _volatile(fact) -> bool:
    return fact.__name__ in VOLATILE_FACTS or getattr(fact, "volatile", False)


def _raw(command) -> str:
    return command.get_raw_value() if hasattr(command, "get_raw_value") else str(command)


def prefetch(reads, target=None, live: bool = False) -> None:
    """Read several facts of `host` (else the current host) in one remote command, kept for this run.

        prefetch([(File, {"path": UNIT_PATH}), (Sha1File, {"path": UNIT_PATH}), (Groups, {})])

    Later `host.get_fact` calls with the same arguments are answered from it (see FactMemo)."""
    target = target if target is not None else host
    memo = run_store("fact_memo", target.state).get(target.name)
    if memo is not None:
        memo.prefetch(reads, live)


def file_reads(*paths: str) -> list:
    """The facts pyinfra's files.put/files.template read for each destination path (for prefetch)."""
    reads = []
    for path in paths:
        reads += [(File, {"path": path}), (Sha1File, {"path": path}), (Directory, {"path": posixpath.dirname(path)})]
    return reads


def unit_reads(*services: str) -> list:
    """The facts pyinfra's systemd.service reads for each service (for prefetch)."""
    kwargs = [{"user_mode": False, "machine": None, "user_name": None, "services": [s]} for s in services]
    return [(SystemdStatus, k) for k in kwargs] + [(SystemdEnabled, k) for k in kwargs]
