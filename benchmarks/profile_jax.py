"""Where a JAX step's time goes: per-op time from a profiler trace, GFLOP/s of every dot.

Rebuilds our contender of a benchmark run from its results JSON (the same setup function
and keyword arguments the harness' worker used), times one measure, traces a few steps
with `jax.profiler` and reads XLA's optimized HLO (dumped by this process) to name each
op's shape, FLOPs and source:

    python benchmarks/profile_jax.py benchmarks/results/bart_jax_none.json train
    python benchmarks/profile_jax.py benchmarks/results/diffusion_jax_none.json ddim50_b8 \\
        --steps 1 --top 30

Prints the process's CPU use during the timed steps (cores busy out of the cores there),
then the ops by traced time per step: count per step, GFLOP/s for dots (YNNPACK/XNNPACK
fusions and plain dots), the result shape and the JAX op that made it. Traced time is the
issuing thread's: an op that runs on both cores shows its wall time, two ops running side
by side show theirs each. Runs on the CPU, like the benchmarks; writes nothing outside
`--workdir` (a temporary directory by default).
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

BENCHMARKS_DIR = os.path.dirname(os.path.abspath(__file__))
SHAPE = re.compile(r"(f32|bf16|f16|s32)\[([\d,]*)\]")


def parse_hlo(text):
    """{instruction name: (result shape, opcode, op_name, FLOPs of the dots it computes)}.

    FLOPs count 2 per multiply-add of each `dot` inside the instruction's fused
    computation (or of the instruction itself), from the operand shapes and contracting
    dimensions in the HLO text; other ops count 0.
    """
    computations, current = {}, None
    for line in text.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) \((.*)\) -> .* \{$", line)
        if header:
            current = computations.setdefault(header.group(1), {"lines": [], "shapes": {}})
            for name, shape in re.findall(r"([\w.\-]+): (\w+\[[\d,]*\])", header.group(2)):
                current["shapes"][name] = shape
        elif current is not None and line.strip() and line != "}":
            current["lines"].append(line)
            defined = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (\w+\[[\d,]*\])", line)
            if defined:
                current["shapes"][defined.group(1)] = defined.group(2)

    def dims(shape):
        match = SHAPE.match(shape or "")
        return [int(d) for d in match.group(2).split(",") if d] if match else None

    def dot_flops(line, shapes):
        match = re.search(r"= (\w+\[[\d,]*\])\S* dot\(%([\w.\-]+), %([\w.\-]+)\)", line)
        contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line)
        if not match or not contracting:
            return 0
        out, lhs = dims(match.group(1)), dims(shapes.get(match.group(2)))
        if out is None or lhs is None:
            return 0
        flops = 2
        for d in out:
            flops *= d
        for axis in contracting.group(1).split(","):
            if axis:
                flops *= lhs[int(axis)]
        return flops

    ops = {}
    for computation in computations.values():
        for line in computation["lines"]:
            match = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (\S+) (\w+)\(", line)
            if not match:
                continue
            name, shape, opcode = match.groups()
            op_name = re.search(r'op_name="([^"]*)"', line)
            called = re.search(r"calls=%([\w.\-]+)", line)
            flops = dot_flops(line, computation["shapes"]) if opcode == "dot" else 0
            if called and called.group(1) in computations:
                inner = computations[called.group(1)]
                flops = sum(dot_flops(x, inner["shapes"]) for x in inner["lines"]
                            if " dot(" in x)
            ops[name] = (shape.split("{")[0], opcode, op_name.group(1) if op_name else "",
                         flops)
    return ops


def trace_totals(trace_dir):
    """({op name: total microseconds}, {op name: count}) of the device ops in a trace."""
    files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"),
                             recursive=True))
    events = json.load(gzip.open(files[-1]))["traceEvents"]
    totals, counts = collections.Counter(), collections.Counter()
    for event in events:
        name = event.get("name", "")
        if (event.get("ph") != "X" or name.startswith("$") or "Thunk" in name
                or "PjRt" in name or "Slinky" in name or "Pjit" in name):
            continue
        totals[name] += event.get("dur", 0)
        counts[name] += 1
    return totals, counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a benchmarks/results/<bench>_jax_*.json file")
    parser.add_argument("measure", help="one of its measures, e.g. train, generate_b1_n32")
    parser.add_argument("--steps", type=int, default=5, help="traced steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--top", type=int, default=40, help="ops to print")
    parser.add_argument("--workdir", default=None, help="trace and HLO dump directory")
    args = parser.parse_args(argv)
    with open(args.results) as f:
        results = json.load(f)
    if results["backend"] != "jax" or "ours" not in results["contenders"]:
        raise SystemExit(f"{args.results}: needs a jax run with our contender; received "
                         f"backend {results['backend']!r}, contenders "
                         f"{sorted(results['contenders'])}.")
    workdir = args.workdir or tempfile.mkdtemp(prefix="profile_jax_")
    dump = os.path.join(workdir, "hlo")
    # Before JAX starts: XLA reads its flags once.
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_dump_to={dump} --xla_dump_hlo_as_text").strip()
    sys.path[:0] = [BENCHMARKS_DIR, os.path.dirname(BENCHMARKS_DIR)]
    import jax

    import harness

    measures, _ = harness.setup_from_results(results, "ours")
    if args.measure not in measures:
        raise SystemExit(f"`measure` {args.measure!r} is not one of {sorted(measures)}.")
    step = measures[args.measure].step
    for _ in range(args.warmup):
        step()
    cpu, start = os.times(), time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    cpu_after = os.times()
    busy = (cpu_after.user + cpu_after.system - cpu.user - cpu.system) / (seconds * args.steps)
    trace_dir = os.path.join(workdir, "trace")
    jax.profiler.start_trace(trace_dir)
    for _ in range(args.steps):
        step()
    jax.profiler.stop_trace()

    totals, counts = trace_totals(trace_dir)
    # The module that defines most of the traced op names is the step's.
    best, ops = 0, {}
    for path in glob.glob(os.path.join(dump, "*after_optimizations.txt")):
        with open(path) as f:
            parsed = parse_hlo(f.read())
        hits = sum(1 for name in totals if name in parsed)
        if hits > best:
            best, ops = hits, parsed
    n = args.steps
    dot_time = sum(t for name, t in totals.items() if ops.get(name, (0, 0, 0, 0))[3])
    dot_flops = sum(ops[name][3] * counts[name] for name in totals
                    if ops.get(name, (0, 0, 0, 0))[3])
    print(f"{args.measure}: {seconds * 1e3:.1f} ms a step, {busy:.2f} of "
          f"{os.cpu_count()} cores busy; traced ops {sum(totals.values()) / n / 1e3:.1f} ms a "
          f"step, of which dots {dot_time / n / 1e3:.1f} ms for {dot_flops / n / 1e9:.2f} GFLOP")
    print(f"{'ms/step':>8} {'x/step':>6} {'GFLOP/s':>7}  {'op':<28} {'shape':<26} source")
    for name, total in totals.most_common(args.top):
        shape, _, source, flops = ops.get(name, ("?", "?", "", 0))
        rate = f"{flops * counts[name] / total / 1e3:7.0f}" if flops and total else " " * 7
        print(f"{total / n / 1e3:8.2f} {counts[name] / n:6.1f} {rate}  {name[:28]:<28} "
              f"{shape[:26]:<26} {source[-70:]}")
    print(f"(trace and HLO in {workdir})")


if __name__ == "__main__":
    main()
