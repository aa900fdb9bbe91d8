"""Run the test suite once per Keras backend: `make test` calls this.

    python tests/run_backends.py                       # jax, tensorflow, torch in turn
    python tests/run_backends.py torch                 # one backend
    python tests/run_backends.py --workers 1           # one pytest process per backend
    python tests/run_backends.py -- -q -x -k t5        # after `--`: pytest's arguments
    python tests/run_backends.py -- tests/models/test_t5.py   # paths narrow the run
    python tests/run_backends.py --every-backend       # one_backend tests on every pass too

Each backend is its own pytest run (a process holds one backend), one after the other, and
its time is printed when it ends. Exits 1 if any backend failed.

Within a backend, `--workers` pytest-xdist processes share the test files (default 2,
`--dist loadfile`: a file's tests stay in one process, so module fixtures such as the
distribution tests' multi-device runs start once). Most of a tiny test's time is compiling
(XLA, TensorFlow tracing), which is single-threaded, so two processes on 2 cores finish
sooner than one: the jax suite measured 637 s with 2 workers against ~865 s in one process
on the 2-core development machine. Each torch worker gets `OMP_NUM_THREADS` = cores /
workers unless the caller set it (OpenMP's waiting threads otherwise spin against the other
worker). Running the three backends at the same time instead was slower on 2 cores (the
torch suite took 30 min beside the other two instead of ~7 alone).

Tests marked `one_backend` (backend-independent code, and the guides' tiny end-to-end runs,
whose backend-specific parts the model tests cover on every backend) run once per call:
this script tells the pytest processes which backends it runs (KBM_TEST_BACKENDS) and
tests/conftest.py runs each such test in one pass only. `--every-backend` turns that off.
"""

import argparse
import importlib.util
import os
import subprocess
import sys
import time

BACKENDS = ("jax", "tensorflow", "torch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backends", nargs="*", metavar="backend",
                        help=f"backends to test, of {', '.join(BACKENDS)} (default: all three)")
    parser.add_argument("--workers", type=int, default=2,
                        help="pytest-xdist processes per backend (1: plain pytest)")
    parser.add_argument("--every-backend", action="store_true",
                        help="run the one_backend tests in every backend's pass as well")
    argv = sys.argv[1:] if argv is None else list(argv)
    pytest_args = []
    if "--" in argv:
        cut = argv.index("--")
        argv, pytest_args = argv[:cut], argv[cut + 1:]
    args = parser.parse_args(argv)
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown:
        parser.error(f"backends must be among {', '.join(BACKENDS)}; received {unknown}")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1; received {args.workers}")
    if args.workers > 1 and importlib.util.find_spec("xdist") is None:
        parser.error(f"--workers {args.workers} needs pytest-xdist (pip install -e '.[test]'),"
                     " or pass --workers 1")
    args.backends = list(dict.fromkeys(args.backends)) or list(BACKENDS)
    args.pytest_args = pytest_args or ["-q"]
    return args


def environment(backend, backends=(), every_backend=False, workers=1):
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.pop("KBM_TEST_BACKENDS", None)
    if not every_backend and len(backends) > 1:
        env["KBM_TEST_BACKENDS"] = ",".join(backends)
    if workers > 1 and backend == "torch":
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    return env


def names_paths(arg):
    return not arg.startswith("-") and os.path.exists(os.path.join(ROOT, arg.split("::")[0]))


def command(pytest_args, workers=1):
    """pytest on the whole suite, or on the paths among `pytest_args` when it names some."""
    paths = [] if any(names_paths(a) for a in pytest_args) else ["tests"]
    parallel = ["-n", str(workers), "--dist", "loadfile"] if workers > 1 else []
    return [sys.executable, "-m", "pytest", *parallel, *pytest_args, *paths]


def main(argv=None):
    args = parse_args(argv)
    status = {}
    for backend in args.backends:
        print(f"=== KERAS_BACKEND={backend} ===", flush=True)
        start = time.time()
        status[backend] = subprocess.call(
            command(args.pytest_args, args.workers), cwd=ROOT,
            env=environment(backend, args.backends, args.every_backend, args.workers))
        print(f"=== {backend}: exit {status[backend]} in {time.time() - start:.0f} s ===",
              flush=True)
    print("=== " + ", ".join(f"{b}: {'ok' if status[b] == 0 else 'FAILED'}"
                             for b in args.backends) + " ===", flush=True)
    return 1 if any(status[b] != 0 for b in args.backends) else 0


if __name__ == "__main__":
    sys.exit(main())
