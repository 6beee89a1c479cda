"""Two of pyinfra's per-operation costs, removed with the same results: what sets a run's time with many hosts.

    from deploys.speedups import install
    install()  # deploys/__init__.py does it; pyinfra 3.10 only, anything else is left as it is

pyinfra's CLI orders operations by the line numbers of the stack that added them
(pyinfra.api.util.get_operation_order_from_stack). It takes them from `inspect.stack()` and
`inspect.getframeinfo`, which read every frame's source lines and search sys.modules for its module:
on this project about 20 frames per operation, so most of the Python time of a no-change run on 16
hosts (profiled: 3.3 s of 10.3 s under cProfile, 364 operations). `operation_order` walks the same
frames and takes the same file names and line numbers from the frames themselves.

pyinfra.api.arguments.all_global_arguments resolves the type hints of its argument classes on every
operation and fact call; they never change, so they are resolved once.

HALO_PYINFRA_UNPATCHED=1 in the environment leaves pyinfra as it is (to compare, or to rule this out).
"""

from __future__ import annotations

import functools
import importlib
import os
import sys

import pyinfra

# by module path: pyinfra.api's attribute `operation` is the decorator, not the module
arguments, facts, operation, util = (importlib.import_module(f"pyinfra.api.{name}")
                                     for name in ("arguments", "facts", "operation", "util"))

PATCHED_VERSIONS = ("3.10.",)  # the versions whose functions below are known to match


def _stack_files_lines(frame) -> list[tuple[str, int]]:
    """(file name, line) of `frame` and its callers, outermost first: what inspect.stack() would name."""
    found = []
    while frame is not None:
        found.append((frame.f_code.co_filename, frame.f_lineno))
        frame = frame.f_back
    return found[::-1]


def operation_order(state) -> list[int]:
    """pyinfra.api.util.get_operation_order_from_stack without reading source files.

    Line numbers of the stack from the first frame in the deploy file on, pyinfra's own frames
    left out; in the CLI, the deploy file's number first.
    """
    frames = _stack_files_lines(sys._getframe(1))  # pyinfra's list also holds its own frame, last, never counted
    start = 0
    if state.current_deploy_filename:  # from the deploy file's first frame; none: nothing (pyinfra's own frame)
        start = next((i for i, (filename, _) in enumerate(frames) if filename == state.current_deploy_filename),
                     len(frames))
    numbers = [state.current_op_file_number] if pyinfra.is_cli else []
    numbers += [line for filename, line in frames[start:] if not filename.startswith(util.PYINFRA_INSTALL_DIR)]
    return numbers


@functools.cache
def _global_arguments() -> tuple[tuple[str, type], ...]:
    return tuple(_original_all_global_arguments())


def all_global_arguments() -> list[tuple[str, type]]:
    """pyinfra.api.arguments.all_global_arguments, its type hints resolved once per process."""
    return list(_global_arguments())


_original_all_global_arguments = arguments.all_global_arguments


def install() -> bool:
    """Put both in place in pyinfra's modules (idempotent); False, changing nothing, on another pyinfra version."""
    if not pyinfra.__version__.startswith(PATCHED_VERSIONS) or os.environ.get("HALO_PYINFRA_UNPATCHED"):
        return False
    operation.get_operation_order_from_stack = operation_order
    arguments.all_global_arguments = all_global_arguments
    facts.all_global_arguments = all_global_arguments
    return True
