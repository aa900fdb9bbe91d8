"""Run the test suite once per Keras backend: `make test` calls this.

    python tests/run_backends.py                       # jax, tensorflow, torch in turn
    python tests/run_backends.py torch                 # one backend
    python tests/run_backends.py --jobs 3              # the three at once (big machines)
    python tests/run_backends.py -- -q -x -k t5        # after `--`: pytest's arguments

Each backend is its own `pytest` process (a process holds one backend), and its time is
printed when it ends. With `--jobs` above 1 they run at the same time, each writing to a
log that is printed whole when it ends, so the outputs do not interleave; a torch process
sharing the CPU gets `OMP_NUM_THREADS=1` unless the caller set it (OpenMP's waiting threads
otherwise spin against the other processes). On 2 cores that mode was slower than running
in turn: XLA's and TensorFlow's thread pools contend too, and the torch suite took 30 min
beside the other two instead of ~5 alone. Exits 1 if any backend failed.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

BACKENDS = ("jax", "tensorflow", "torch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backends", nargs="*", metavar="backend",
                        help=f"backends to test, of {', '.join(BACKENDS)} (default: all three)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="backends running at the same time (1: one after the other)")
    argv = sys.argv[1:] if argv is None else list(argv)
    pytest_args = []
    if "--" in argv:
        cut = argv.index("--")
        argv, pytest_args = argv[:cut], argv[cut + 1:]
    args = parser.parse_args(argv)
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown:
        parser.error(f"backends must be among {', '.join(BACKENDS)}; received {unknown}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1; received {args.jobs}")
    args.backends = list(dict.fromkeys(args.backends)) or list(BACKENDS)
    args.pytest_args = pytest_args or ["-q"]
    return args


def environment(backend, shared):
    env = dict(os.environ, KERAS_BACKEND=backend)
    if shared and backend == "torch":
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def command(pytest_args):
    return [sys.executable, "-m", "pytest", *pytest_args, "tests"]


def run_serial(backends, pytest_args):
    status = {}
    for backend in backends:
        print(f"=== KERAS_BACKEND={backend} ===", flush=True)
        start = time.time()
        status[backend] = subprocess.call(command(pytest_args), cwd=ROOT,
                                          env=environment(backend, shared=False))
        print(f"=== {backend}: exit {status[backend]} in {time.time() - start:.0f} s ===",
              flush=True)
    return status


def run_parallel(backends, pytest_args, jobs):
    status, running, waiting = {}, {}, list(backends)
    with tempfile.TemporaryDirectory(prefix="kbm-tests-") as logs:
        while waiting or running:
            while waiting and len(running) < jobs:
                backend = waiting.pop(0)
                log = open(os.path.join(logs, f"{backend}.log"), "w+")
                process = subprocess.Popen(command(pytest_args), cwd=ROOT, stdout=log,
                                           stderr=subprocess.STDOUT,
                                           env=environment(backend, shared=jobs > 1))
                running[backend] = (process, log, time.time())
                print(f"=== KERAS_BACKEND={backend}: started ===", flush=True)
            time.sleep(1)
            for backend, (process, log, start) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[backend]
                status[backend] = process.returncode
                log.seek(0)
                print(f"=== KERAS_BACKEND={backend} ===", flush=True)
                sys.stdout.write(log.read())
                log.close()
                print(f"=== {backend}: exit {process.returncode} in "
                      f"{time.time() - start:.0f} s ===", flush=True)
    return status


def main(argv=None):
    args = parse_args(argv)
    if args.jobs == 1 or len(args.backends) == 1:
        status = run_serial(args.backends, args.pytest_args)
    else:
        status = run_parallel(args.backends, args.pytest_args, args.jobs)
    failed = [b for b in args.backends if status.get(b) != 0]
    print("=== " + ", ".join(f"{b}: {'ok' if status.get(b) == 0 else 'FAILED'}"
                             for b in args.backends) + " ===", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
