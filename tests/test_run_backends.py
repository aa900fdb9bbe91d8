"""The test runner itself (tests/run_backends.py) and conftest's one_backend rule."""

import pytest

from tests import conftest, run_backends


@pytest.mark.one_backend
def test_one_backend_runs_in_its_home_pass_else_the_first(monkeypatch):
    monkeypatch.setattr(conftest, "RUN_BACKENDS", ["jax", "tensorflow", "torch"])
    assert conftest.one_backend_for("torch") == "torch"
    assert conftest.one_backend_for(None) == "jax"
    monkeypatch.setattr(conftest, "RUN_BACKENDS", ["tensorflow", "jax"])
    assert conftest.one_backend_for("torch") == "tensorflow"  # home not in this run
    monkeypatch.setattr(conftest, "RUN_BACKENDS", ["tensorflow", "torch"])
    assert conftest.one_backend_for("jax", "torch") == "torch"  # the second home
    assert conftest.one_backend_for("jax") == "tensorflow"
    monkeypatch.setattr(conftest, "RUN_BACKENDS", ["torch"])
    assert conftest.one_backend_for("jax") is None  # one backend: every test runs
    monkeypatch.setattr(conftest, "RUN_BACKENDS", [])
    assert conftest.one_backend_for("jax") is None  # plain pytest


@pytest.mark.one_backend
def test_runner_command_environment_and_arguments(capsys):
    cmd = run_backends.command(["-q"], workers=2)
    assert cmd[-1] == "tests" and cmd[cmd.index("-n") + 1] == "2" and "loadfile" in cmd
    cmd = run_backends.command(["-q", "tests/test_flops.py::test_x", "-k", "t5"], workers=1)
    assert "tests" not in cmd and "-n" not in cmd  # a path narrows the run; 1: plain
    env = run_backends.environment("torch", ["jax", "torch"], workers=2)
    assert env["KBM_TEST_BACKENDS"] == "jax,torch" and env["KERAS_BACKEND"] == "torch"
    assert "OMP_NUM_THREADS" in env
    assert "KBM_TEST_BACKENDS" not in run_backends.environment("jax", ["jax", "torch"],
                                                                every_backend=True)
    args = run_backends.parse_args(["torch", "--workers", "1", "--", "-x"])
    assert args.backends == ["torch"] and args.pytest_args == ["-x"]
    for bad in (["mxnet"], ["--workers", "0"]):
        with pytest.raises(SystemExit):
            run_backends.parse_args(bad)
        assert bad[-1] in capsys.readouterr().err
