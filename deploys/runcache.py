"""Values kept for one pyinfra run (one State) and shared by all its hosts: the one per-run cache.

    from deploys.runcache import once_per_run, run_store
    plans = once_per_run("llama_cpp_plans", lambda: plan_builds(host.state))  # computed by the first host
    reports = run_store("verify_reports")                                     # a dict for this run

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

from collections.abc import Callable
from typing import TypeVar

import gevent.lock
from pyinfra import host

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
