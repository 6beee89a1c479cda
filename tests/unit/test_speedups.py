"""deploys/speedups.py gives what pyinfra's own functions give, only faster."""

import importlib
from types import SimpleNamespace

import pyinfra
import pytest

from deploys import speedups


def _nested(depth: int, state):
    """Both orders taken from the same line, `depth` frames below the test (a deploy's calls)."""
    if depth:
        return _nested(depth - 1, state)
    return speedups.util.get_operation_order_from_stack(state), speedups.operation_order(state)  # one line: same numbers


@pytest.mark.parametrize("deploy_file", [__file__, "deploys/not-on-this-stack.py", None])
@pytest.mark.parametrize("is_cli", [True, False])
def test_operation_order_is_pyinfras(deploy_file, is_cli, monkeypatch):
    monkeypatch.setattr(pyinfra, "is_cli", is_cli)
    state = SimpleNamespace(current_deploy_filename=deploy_file, current_op_file_number=7)
    theirs, ours = _nested(5, state)
    assert ours == theirs
    if deploy_file == __file__:  # the frames of this file from the test on: the test, six of _nested
        assert len(ours) >= 7 + is_cli


def test_global_arguments_are_pyinfras():
    assert speedups.all_global_arguments() == speedups._original_all_global_arguments()
    speedups.all_global_arguments().clear()  # a caller changing its list changes nothing kept
    assert speedups.all_global_arguments() == speedups._original_all_global_arguments()


def test_installed_in_pyinfras_modules():
    importlib.import_module("deploys")  # importing the package installs them

    assert speedups.operation.get_operation_order_from_stack is speedups.operation_order
    assert speedups.facts.all_global_arguments is speedups.all_global_arguments
    assert speedups.arguments.all_global_arguments is speedups.all_global_arguments
