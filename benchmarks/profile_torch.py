"""Where a torch step's time goes, contender against contender: ops and matrix products.

Rebuilds contenders of a torch benchmark run from its results JSON (the same setup
functions, keyword arguments, process settings and torch threads the harness' workers
had; on the torch backend ours is a torch program too), each in a fresh process, one
after another. Each times one measure,
then records a few steps with `torch.profiler` and reports the ops by self CPU time and
the matrix products (`aten::mm`, `aten::bmm`, `aten::addmm`) by input shapes, so that two
libraries running the same kernels can be compared call for call:

    python benchmarks/profile_torch.py benchmarks/results/t5_torch_ours.json train
    python benchmarks/profile_torch.py benchmarks/results/bart_torch_none_amd.json train \\
        --contenders ours transformers --output out/profile_bart_torch.json

Prints, per contender, the step's milliseconds, the self CPU milliseconds per step of all
ops and of the products, and the top ops; then the products shape by shape with each
contender's time. `--output` writes all of it as JSON. Runs on the CPU, like the
benchmarks.
"""

import argparse
import json
import os
import subprocess
import sys
import time

BENCHMARKS_DIR = os.path.dirname(os.path.abspath(__file__))
PRODUCTS = ("aten::mm", "aten::bmm", "aten::addmm")


def profile_contender(results_path, contender, measure, steps, warmup):
    """In this process: {step_ms, ops: {name: [ms per step, calls per step]},
    products: {"op shapes": [ms per step, calls per step]}} of one contender."""
    with open(results_path) as f:
        results = json.load(f)
    os.environ["KERAS_BACKEND"] = "torch"
    sys.path[:0] = [BENCHMARKS_DIR, os.path.dirname(BENCHMARKS_DIR)]
    import harness

    # The run's process settings (`--tuning`), as its worker had them, before torch starts.
    harness.apply_process_tuning(results["tuning"], "torch", True)
    harness.set_torch_threads(results.get("torch_threads"))
    import torch
    from torch.profiler import ProfilerActivity, profile

    measures, _ = harness.setup_from_results(results, contender)
    if measure not in measures:
        raise SystemExit(f"`measure` {measure!r} is not one of {sorted(measures)}.")
    step = measures[measure].step
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    ops = {e.key: [e.self_cpu_time_total / steps / 1e3, e.count / steps]
           for e in prof.key_averages()}
    products = {}
    for e in prof.key_averages(group_by_input_shape=True):
        if e.key in PRODUCTS:
            shapes = " x ".join(str(s) for s in e.input_shapes if s)
            products[f"{e.key} {shapes}"] = [e.self_cpu_time_total / steps / 1e3,
                                            e.count / steps]
    return {"step_ms": sorted(times)[len(times) // 2] * 1e3, "threads": torch.get_num_threads(),
            "ops": ops, "products": products}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a benchmarks/results/<bench>_torch_*.json file")
    parser.add_argument("measure", help="one of its measures, e.g. train, generate_b8_n32")
    parser.add_argument("--contenders", nargs="+", default=["ours", "transformers"],
                        help="contenders of that run to profile (default: ours transformers)")
    parser.add_argument("--steps", type=int, default=3, help="timed and profiled steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--top", type=int, default=20, help="ops to print per contender")
    parser.add_argument("--output", default=None, help="write the profiles as JSON here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("steps", "top"):
        if getattr(args, name) < 1:
            raise SystemExit(f"`--{name}` must be at least 1; received {getattr(args, name)}.")
    if args.worker:
        profile = profile_contender(args.results, args.worker, args.measure, args.steps,
                                    args.warmup)
        print("PROFILE " + json.dumps(profile))
        return
    with open(args.results) as f:
        results = json.load(f)
    if results["backend"] != "torch":
        raise SystemExit(f"{args.results}: needs a torch run; received backend "
                         f"{results['backend']!r}.")
    unknown = [c for c in args.contenders if c not in results["contenders"]]
    if unknown:
        raise SystemExit(f"`--contenders` {unknown} not in that run; it has "
                         f"{sorted(results['contenders'])}.")
    profiles = {}
    for contender in args.contenders:  # each in a fresh process, one after another
        command = [sys.executable, os.path.abspath(__file__), args.results, args.measure,
                   "--worker", contender, "--steps", str(args.steps), "--warmup",
                   str(args.warmup)]
        out = subprocess.run(command, capture_output=True, text=True,
                             env=dict(os.environ, KERAS_BACKEND="torch"))
        lines = [l for l in out.stdout.splitlines() if l.startswith("PROFILE ")]
        if out.returncode or not lines:
            raise SystemExit(f"{contender}: failed\n{out.stderr[-3000:]}")
        profiles[contender] = json.loads(lines[-1][len("PROFILE "):])
    for contender, p in profiles.items():
        total = sum(ms for ms, _ in p["ops"].values())
        products = sum(ms for ms, _ in p["products"].values())
        print(f"{contender}: {p['step_ms']:.1f} ms a step ({p['threads']} threads); ops "
              f"{total:.1f} ms self CPU a step, products {products:.1f} ms "
              f"({products / total:.0%})")
        for name, (ms, calls) in sorted(p["ops"].items(), key=lambda kv: -kv[1][0])[:args.top]:
            print(f"  {ms:8.2f} ms {calls:6.0f}x  {name[:70]}")
    keys = sorted({k for p in profiles.values() for k in p["products"]},
                  key=lambda k: -max(p["products"].get(k, [0])[0] for p in profiles.values()))
    print("products, ms a step (calls):  " + "  |  ".join(profiles))
    for key in keys:
        cells = [f"{p['products'][key][0]:8.2f} ({p['products'][key][1]:.0f})"
                 if key in p["products"] else f"{'-':>8}    " for p in profiles.values()]
        print(f"  {key[:64]:<64} " + "  ".join(cells))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump({"results": args.results, "measure": args.measure,
                       "steps": args.steps, "profiles": profiles}, f, indent=1)


if __name__ == "__main__":
    main()
