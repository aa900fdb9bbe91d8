"""The benchmark harness and renderer (no timing is asserted: speed lives in benchmarks/)."""

import importlib.util
import pathlib

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def render():
    return _load("render")


@pytest.fixture(scope="module")
def harness():
    return _load("harness")


def test_readme_tables_are_rendered_from_the_json_files(render):
    # Every number in benchmarks/README.md comes from a JSON file the scripts wrote.
    assert render.main(["--check"]) in (0, None)


def test_ratios_per_round_and_flop_normalized(render):
    entry = {"results": {
        "ours": {"rounds": [{"value": 200.0}, {"value": 300.0}], "flops_per_unit": 1.0},
        "peer": {"rounds": [{"value": 100.0}, {"value": 100.0}], "flops_per_unit": 1.5},
    }}
    assert render.round_ratios(entry, "peer") == [2.0, 3.0]
    # The peer does 1.5x the work per token: its achieved FLOP/s count for more.
    assert render.round_ratios(entry, "peer", flop_normalized=True) == pytest.approx(
        [2.0 / 1.5, 3.0 / 1.5])
    assert render.differs_in_work(entry, "peer")
    assert "FLOP-normalized" in render.ratio_parts(entry, "peer")


def test_every_contender_gets_the_same_settings(harness, monkeypatch):
    from keras_bigmodels import runtime

    monkeypatch.setattr(harness, "cpu_count", lambda: 2)
    monkeypatch.setattr(harness, "BASE_ENVIRONMENT", {"PATH": "/bin"})
    ours = harness.worker_environment("ours", "jax")
    assert ours == harness.worker_environment("ours", "jax")
    # The harness replicates runtime.tune_cpu() without importing the library in peers.
    assert harness.XLA_SCHEDULER_FLAG == runtime.XLA_SCHEDULER_FLAG
    assert f"{runtime.XLA_SCHEDULER_FLAG}=false" in ours["XLA_FLAGS"]
    assert "XLA_FLAGS" not in harness.worker_environment("none", "jax")
    monkeypatch.setattr(harness, "cpu_count", lambda: 16)
    assert "XLA_FLAGS" not in harness.worker_environment("ours", "jax")


def test_summary_is_median_min_max(harness):
    assert harness.summarize([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}
