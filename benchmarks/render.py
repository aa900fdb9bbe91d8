"""Render benchmarks/README.md (and the root README's summary) from the harness JSON files.

Every number in the generated README comes from a file in benchmarks/results/ that a bench
script wrote; nothing is typed by hand. Prose that needs a number belongs in `NOTES` only if
the number is read from a JSON file here.

    python benchmarks/render.py            # rewrite benchmarks/README.md, print the summary
    python benchmarks/render.py --check    # exit 1 if README.md is not what the JSON gives
    python benchmarks/render.py --plots    # also redraw the scaling PNGs

The summary block printed at the end is what the root README.md quotes (the lead pastes it).
"""

import argparse
import glob
import datetime
import json
import os
import statistics
import sys

BENCHMARKS_DIR = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(BENCHMARKS_DIR, "results")
README = os.path.join(BENCHMARKS_DIR, "README.md")
BACKENDS = ("jax", "tensorflow", "torch")
TUNINGS = ("ours", "none")
PEERS = ("keras_hub", "transformers")

METHOD = """\
## Method

All scripts run through `harness.py`:

- **Each contender in its own process** (a worker started per contender), so peak RSS is
  that contender's own, and no library's settings leak into another's process; the peers'
  workers never import keras_bigmodels (each JSON records `imported_keras_bigmodels` per
  worker).
- **The same runtime settings for every contender**: `--tuning ours` gives every worker the
  settings of `keras_bigmodels.runtime.tune_cpu()` (glibc `M_MMAP_MAX=0` and
  `M_TRIM_THRESHOLD=2**31-1`, XLA:CPU's concurrency-optimized scheduler off on <= 4 cores, and
  on JAX `jax_cpu_enable_async_dispatch=False`), replicated in the harness; `--tuning none`
  gives none of them. Tables say which; where both were run, both are shown.
- **Rounds in alternating order** (A B C, C B A, ...), each round untimed warm-up steps then
  timed steps; a round's figure is its units over its time; tables give the median over
  rounds and the min-max range. Ratios are per round (a contender against ours in the same
  round, adjacent in time), median and range.
- **Like for like**: the same config and optimizer on every side, dropout off, no compiled
  metrics on any side (keras-hub's default compile adds an accuracy, ours a perplexity or
  an accuracy: all are recompiled without; the JSON records what each step returned). BERT:
  every side runs its MLM head on the masked positions only (transformers' `BertForMaskedLM`
  computes full-vocabulary logits everywhere as shipped; that variant, when run, is listed
  with its own FLOP count, so its MFU is the FLOP-normalized comparison).
- **MFU** = achieved model FLOP/s over a peak measured at the start of the run (the best of
  several float32 matmuls, per framework: a transformers row uses torch's). The harness
  never prints an MFU above 1: it records the count as wrong instead.
- **Before/after a change**: `--baseline-ref <commit>` adds our library at that commit
  (checked out in a temporary `git worktree`) as one more contender, alternating with the
  current tree in the same run, e.g. `python benchmarks/bench_gpt.py --backend jax
  --contenders ours --baseline-ref HEAD~1 --generate-batches --num-beams 0`; it writes
  `results/<benchmark>_<backend>_<tuning>_vs_<commit>.json` (listed below, never in the
  summary).
- **Another host**: the same command run on a second kind of machine writes
  `results/<benchmark>_<backend>_<tuning>_<host>.json` (`--output`), shown beside the first
  (every header and summary line names its CPU): the peers' speed against ours depends on
  the host (e.g. torch's float32 matmul peak against XLA's), so a ratio is a host's.
- **Fresh processes**: by default the rounds alternate within one worker process per
  contender, so a run's spread leaves out what differs from process to process (e.g.
  where the allocator places the buffers). `--processes N` starts N fresh workers per
  contender one after another, each running `--rounds` rounds (the order keeps
  alternating across them); tables then say e.g. "6 rounds (3 processes x 2)" and every
  round records its process.
- Each JSON holds the commit (and the files modified at run time: the checkout is shared),
  date, machine, library versions, load average before, during and after, config, steps,
  warm-up and every step's seconds. **The CPU is shared**: a load average above the core
  count means other work ran at the same time, and the ranges widen accordingly. Since
  commit 1a38f88 a run also records its nice value and the CPU seconds that other
  processes got while it ran (from /proc/stat, minus the run's own processes): runs made at
  `nice -20` while other work was held at `nice 19` show a high load average but few CPU
  seconds taken from them.
"""


RERUN = """\
## Rerunning everything

Each command writes `results/<benchmark>_<backend>_<tuning>.json`; then
`python benchmarks/render.py` rewrites this file and prints the root README's summary.

```bash
for backend in jax tensorflow torch; do
  for tuning in ours none; do
    python benchmarks/bench_attention.py --backend $backend --tuning $tuning
    python benchmarks/bench_gpt.py --backend $backend --tuning $tuning
    python benchmarks/bench_bert.py --backend $backend --tuning $tuning
    python benchmarks/bench_vit.py --backend $backend --tuning $tuning
    python benchmarks/bench_t5.py --backend $backend --tuning $tuning
    python benchmarks/bench_bart.py --backend $backend --tuning $tuning
    python benchmarks/bench_clip.py --backend $backend --tuning $tuning
    python benchmarks/bench_diffusion.py --backend $backend --tuning $tuning
  done
done
python benchmarks/bench_distribution.py --backend jax --tuning ours
python benchmarks/bench_gpt.py --backend jax --tuning ours --scaling --grid reduced
python benchmarks/render.py
```
"""


def load_results(directory=None):
    results = []
    for path in sorted(glob.glob(os.path.join(directory or RESULTS_DIR, "*.json"))):
        with open(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError:
                continue
        if data.get("harness_version"):
            data["path"] = path
            results.append(data)
    return results


def number(value):
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def spread(slot):
    if not slot or "median" not in slot:
        return "failed" if slot and slot.get("error") else "-"
    if len(slot["rounds"]) == 1:
        return number(slot["median"])
    return f"{number(slot['median'])} ({number(slot['min'])}-{number(slot['max'])})"


def round_ratios(entry, name, reference="ours", flop_normalized=False):
    """Per-round ratios reference/name (ours over a peer): [values].

    `flop_normalized`: ratios of achieved model FLOP/s (each side's units times its own
    FLOPs per unit), for a peer that does more work per unit than ours.
    """
    results = entry["results"]
    if name not in results or reference not in results:
        return []
    scale = 1.0
    if flop_normalized:
        ours_flops = results[reference].get("flops_per_unit")
        their_flops = results[name].get("flops_per_unit")
        if not ours_flops or not their_flops:
            return []
        scale = ours_flops / their_flops
    ours = [r["value"] for r in results[reference]["rounds"]]
    theirs = [r["value"] for r in results[name]["rounds"]]
    return [scale * a / b for a, b in zip(ours, theirs) if b]


def differs_in_work(entry, name, reference="ours"):
    results = entry["results"]
    flops = [results.get(n, {}).get("flops_per_unit") for n in (reference, name)]
    return all(flops) and flops[0] != flops[1]


def ratio_parts(entry, name, reference="ours"):
    """'1.10x (1.05-1.20)', plus the FLOP-normalized ratio where the work differs."""
    text = ratio_text(round_ratios(entry, name, reference))
    if differs_in_work(entry, name, reference):
        normalized = round_ratios(entry, name, reference, flop_normalized=True)
        text += f" raw, {ratio_text(normalized)} FLOP-normalized"
    return text


# Benchmarks whose ratios are over a peer rather than ours (ours has several variants).
RATIO_DENOMINATOR = {"attention": "keras_mha", "distribution": "single_device"}


def ratio_pairs(benchmark, names):
    """(numerator, denominator) contender pairs of the ratio lines of a table."""
    pairs = []
    for name in names:
        if "@" in name and name.split("@")[0] in names:  # current tree / baseline commit
            pairs.append((name.split("@")[0], name))
    denominator = RATIO_DENOMINATOR.get(benchmark)
    if denominator in names:
        pairs += [(n, denominator) for n in names if n != denominator and "@" not in n]
    elif "ours" in names:
        pairs += [("ours", n) for n in names if n != "ours" and "@" not in n]
    return pairs


def run_load(data):
    return max([data["load_average_before"][0], *(data.get("load_average_during") or [])])


def ratio_text(ratios):
    if not ratios:
        return "-"
    median = statistics.median(ratios)
    if len(ratios) == 1:
        return f"{median:.2f}x"
    return f"{median:.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def total_rounds(data):
    return data["rounds"] * data.get("processes", 1)


def rounds_text(data):
    """'3 rounds', or '6 rounds (3 processes x 2)' for a run with fresh workers."""
    processes = data.get("processes", 1)
    if processes == 1:
        return f"{data['rounds']} rounds"
    return f"{total_rounds(data)} rounds ({processes} processes x {data['rounds']})"


def run_header(data):
    load_during = data.get("load_average_during") or [0]
    git = data["git"]
    dirty = len(git.get("modified_files", []))
    machine = data["machine"]
    peaks = ", ".join(f"{k} {v['flops_per_second'] / 1e9:.0f} GFLOP/s"
                      for k, v in data["peak_flops"].items() if v.get("flops_per_second"))
    return (f"*{data['backend']}, tuning `{data['tuning']}`*: commit `{git['commit'][:7]}`"
            f"{f' (+{dirty} modified files)' if dirty else ''}, {data['date'][:16]}, "
            f"{rounds_text(data)} x {data['steps']} steps (+{data['warmup']} warm-up"
            f"{'; under 3 rounds: a trial, not a result' if total_rounds(data) < 3 else ''}), "
            f"{machine['cores']} cores {machine['cpu_model']}"
            f"{', torch threads %s' % data['torch_threads'] if data.get('torch_threads') else ''}"
            f", load "
            f"{data['load_average_before'][0]:.2f} before / max {max(load_during):.2f} during "
            f"/ {data['load_average_after'][0]:.2f} after{contention_text(data)}; "
            f"peak {peaks}. `{os.path.relpath(data['path'], BENCHMARKS_DIR)}`")


def busy_text(data):
    """How busy the machine was: other processes' CPU share where recorded, else the load."""
    share = background_share(data)
    if share is None:
        return f"load up to {run_load(data):.1f}"
    where = "in the timed rounds" if any(
        r.get("wall_seconds") for e in data.get("measurements", {}).values()
        for slot in e.get("results", {}).values() for r in slot.get("rounds", [])) else ""
    return (f"nice {data['priority']['nice']}, other processes took {100 * share:.0f}% of "
            f"the CPU{' ' + where if where else ''}")


def background_share(data):
    """Fraction of the machine's CPU time that other processes got: during the measured rounds
    where the JSON records it per round, else over the whole run (builds and compiles too)."""
    cores = data["machine"].get("cpu_count") or data["machine"]["cores"]
    rounds = [r for entry in (data.get("measurements") or {}).values()
              for slot in entry.get("results", {}).values() for r in slot.get("rounds", [])
              if r.get("background_cpu_seconds") is not None and r.get("wall_seconds")]
    if rounds:
        taken = sum(r["background_cpu_seconds"] for r in rounds)
        return min(1.0, max(0.0, taken / (sum(r["wall_seconds"] for r in rounds) * cores)))
    if data.get("background_cpu_seconds") is None or not data.get("date_end"):
        return None
    seconds = (datetime.datetime.fromisoformat(data["date_end"])
               - datetime.datetime.fromisoformat(data["date"])).total_seconds()
    return min(1.0, max(0.0, data["background_cpu_seconds"] / max(seconds * cores, 1.0)))


def contention_text(data):
    """What other processes took while the run ran (harness records since 1a38f88)."""
    if data.get("background_cpu_seconds") is None:
        return ""
    nice = (data.get("priority") or {}).get("nice")
    return (f"; nice {nice}, other processes used {data['background_cpu_seconds']:.0f} "
            f"CPU s during the run")


def measure_title(measure):
    if measure == "train":
        return "train"
    if measure == "inference":
        return "inference"
    if measure.startswith("ddim"):  # bench_diffusion.py's sampling: "ddim50_b8"
        steps, batch = measure[len("ddim"):].split("_")
        return f"DDIM-{steps} {batch.replace('b', 'b=')}"
    kind, batch, tokens = measure.split("_")
    if kind.startswith("beam"):
        return f"beam-{kind[4:]} {batch.replace('b', 'b=')} {tokens[1:]} tok"
    return f"gen {batch.replace('b', 'b=')} {tokens[1:]} tok"


# Facts a setup function reports (its `info`) that a table shows: (key, header, scale).
INFO_COLUMNS = {
    "distribution": [("weight_bytes_device0", "weights on device 0 MB", 2**-20),
                     ("planned_weight_bytes", "planned MB", 2**-20),
                     ("compile_seconds", "first step s", 1)],
    "bert": [("parameters", "parameters", 1)],
    "vit": [("parameters", "parameters", 1)],
    "clip": [("parameters", "parameters", 1)],
    "diffusion": [("parameters", "parameters", 1)],
}


def contender_table(data):
    """Rows: contenders; columns: each measurement (median and range), MFU, RSS, ratios."""
    order = data["measure_order"]
    unit = {}
    for measure in order:
        for slot in data["measurements"].get(measure, {}).get("results", {}).values():
            unit.setdefault(measure, slot.get("unit", ""))
    # An MFU column after training, and after any other measure with a FLOP count
    # (e.g. the UNet's DDIM sampling).
    with_mfu = {measure for measure in order if measure == "train" or any(
        "flops_per_unit" in slot
        for slot in data["measurements"].get(measure, {}).get("results", {}).values())}
    header = ["contender"]
    for measure in order:
        header.append(f"{measure_title(measure)} {unit.get(measure, '')}")
        if measure in with_mfu:
            header.append("train MFU" if measure == "train"
                          else f"{measure_title(measure)} MFU")
    header += ["peak RSS MB"]
    info_columns = INFO_COLUMNS.get(data["benchmark"], [])
    header += [title for _, title, _ in info_columns]
    rows = []
    names = list(data["contenders"])
    for name in names:
        record = data["contenders"][name]
        label = record["label"] + (" **(ours)**" if name == "ours" else "")
        row = [label]
        for measure in order:
            slot = data["measurements"].get(measure, {}).get("results", {}).get(name)
            row.append(spread(slot) if slot else ("failed" if record.get("error") else "-"))
            if measure in with_mfu:
                mfu = (slot or {}).get("mfu")
                row.append(f"{mfu['median']:.2f}" if mfu else
                           ("n/a" if (slot or {}).get("mfu_note") else "-"))
        row.append(number(record.get("peak_rss_mb")))
        for key, _, scale in info_columns:
            value = (record.get("info") or {}).get(key)
            row.append(number(value * scale) if value is not None else "-")
        rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    ratio_lines = []
    for numerator, denominator in ratio_pairs(data["benchmark"], names):
        parts = [f"{measure_title(m)} "
                 f"{ratio_parts(data['measurements'][m], denominator, numerator)}"
                 for m in order if m in data["measurements"]]
        ratio_lines.append(f"- {data['contenders'][numerator]['label']} / "
                           f"{data['contenders'][denominator]['label']}: " + "; ".join(parts))
    errors = [f"- {name} failed: {record['error']}" for name, record in
              data["contenders"].items() if record.get("error")]
    for measure in order:
        for name, slot in data["measurements"].get(measure, {}).get("results", {}).items():
            if slot.get("mfu_note"):
                errors.append(f"- {name} {measure}: no MFU ({slot['mfu_note']})")
    return lines + ([""] + ratio_lines if ratio_lines else []) + (errors and [""] + errors)


def section(title, command, results, benchmark, description):
    lines = [f"## {title}", "", description, "", f"Command: `{command}`", ""]
    runs = [r for r in results if r["benchmark"] == benchmark]
    runs.sort(key=lambda r: (BACKENDS.index(r["backend"]) if r["backend"] in BACKENDS else 9,
                             TUNINGS.index(r["tuning"]) if r["tuning"] in TUNINGS else 9))
    if not runs:
        return lines + ["No harness run recorded yet.", ""]
    for data in runs:
        lines += [run_header(data), ""] + contender_table(data)
        notes = data.get("notes") or []
        lines += [""] + [f"> {note}" for note in notes] + ([""] if notes else [])
    return lines


def describe_gpt(results):
    data = next((r for r in results if r["benchmark"] == "gpt"), None)
    if not data:
        return "GPT training and generation."
    c = data["config"]
    m = c["config"]
    generation = ", ".join(measure_title(j) for j in data["measure_order"] if j != "train")
    return (f"{m['num_layers']} layers, hidden {m['hidden_dim']}, {m['num_heads']} heads, "
            f"intermediate {m['intermediate_dim']}, vocabulary {m['vocabulary_size']}, "
            f"sequence {c['sequence']}, batch {c['batch']}; generation (greedy unless beam, no "
            f"early stop, prompts of {c['generate'][0]['prompt_length'] if c['generate'] else '-'}"
            f" tokens): {generation or 'not run'}. Throughput in tokens/s.")


def describe_seq2seq(results, benchmark, family):
    data = next((r for r in results if r["benchmark"] == benchmark), None)
    if not data:
        return f"{family} training and generation."
    c = data["config"]
    m = c["config"]
    generation = ", ".join(measure_title(j) for j in data["measure_order"] if j != "train")
    prompt = c["generate"][0]["prompt_length"] if c["generate"] else "-"
    return (f"{family}, {m['num_layers']} + {m['num_layers']} layers, hidden "
            f"{m['hidden_dim']}, {m['num_heads']} heads, intermediate {m['intermediate_dim']}, "
            f"vocabulary {m['vocabulary_size']}; training batch {c['batch']} of {c['source']} "
            f"encoder and {c['target']} target tokens (tokens/s count both); generation "
            f"(greedy unless beam, no early stop, encoder inputs of {prompt} tokens): "
            f"{generation or 'not run'}, tokens/s of new tokens.")


def describe(results, benchmark):
    data = next((r for r in results if r["benchmark"] == benchmark), None)
    if not data:
        return ""
    config = data["config"]
    flat = dict(config.get("config", {}))
    flat.update({k: v for k, v in config.items() if k != "config"})
    return "Config: " + ", ".join(f"{k} {v}" for k, v in flat.items()
                                  if not isinstance(v, (list, dict))) + "."


def describe_diffusion(results):
    data = next((r for r in results if r["benchmark"] == "diffusion"), None)
    if not data:
        return "UNet diffusion training and DDIM sampling."
    m = data["config"]["config"]
    levels = ", ".join(f"{c}{' + attention' if a else ''}"
                       for c, a in zip(m["block_out_channels"], m["attention_levels"]))
    return (describe(results, "diffusion") + f" Levels: {levels}. Training images/s "
            "(epsilon MSE on fresh noise and timesteps) and sampling images/s (DDIM, "
            "finished images).")


def scaling_section(results):
    lines = ["## GPT scaling (`bench_gpt.py --scaling`)", ""]
    files = sorted(r["path"] for r in results if r["benchmark"] == "gpt_scaling")
    if not files:
        return lines + ["No scaling run recorded yet.", ""]
    for path in files:
        with open(path) as f:
            data = json.load(f)
        lines += [f"*{data['backend']}, tuning `{data['tuning']}`*, grid `{data['grid_name']}`"
                  f" (training at {data['tokens_per_training_step']} tokens per step), "
                  f"`{os.path.relpath(path, BENCHMARKS_DIR)}`:", ""]
        for axis, points in _scaling_axes(data).items():
            png = _png_path(path, axis)
            if os.path.exists(png):
                lines += [f"![{axis}]({os.path.relpath(png, BENCHMARKS_DIR)})", ""]
            names = sorted({n for p in points for n in p["results"]},
                           key=lambda n: (n != "ours", n))
            header = [axis] + [f"{n} {p}" for n in names for p in ("tok/s", "RSS MB")]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for point in points:
                row = [str(point["value"])]
                for name in names:
                    slot = point["results"].get(name, {})
                    row += [spread(slot), number(slot.get("peak_rss_mb_after"))]
                lines.append("| " + " | ".join(row) + " |")
            loads = [p["load"] for p in points]
            shares = [p["share"] for p in points if p["share"] is not None]
            taken = (f"; other processes took {100 * min(shares):.0f}-"
                     f"{100 * max(shares):.0f}% of the CPU in the timed rounds (this run at "
                     f"nice {data['points'][0]['result']['priority']['nice']})"
                     if shares else "")
            lines += ["", f"Load average during these points: {min(loads):.2f}-"
                          f"{max(loads):.2f}{taken}.", ""]
    return lines


def _scaling_axes(data):
    axes = {}
    for point in data["points"]:
        result = point["result"]
        entry = result["measurements"].get(point["measure"], {"results": {}})
        axes.setdefault(point["axis"], []).append(
            {"value": point["value"], "results": entry["results"],
             "load": max(result.get("load_average_during") or [0]),
             "share": background_share(result),
             "labels": {n: c["label"] for n, c in result["contenders"].items()}})
    return axes


def _png_path(json_path, axis):
    return json_path[:-len(".json")] + f"_{axis}.png"


AXIS_TITLES = {"sequence_length": "sequence length (tokens per step fixed)",
               "width": "hidden width (4 layers)", "generation_batch": "generation batch size",
               "generation_new_tokens": "new tokens (batch 1)"}


def plot_scaling(path):
    """Draw one PNG per axis of a scaling JSON (throughput and peak RSS vs the axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(path) as f:
        data = json.load(f)
    written = []
    for axis, points in _scaling_axes(data).items():
        figure, (speed, memory) = plt.subplots(1, 2, figsize=(10, 4))
        names = sorted({n for p in points for n in p["results"]},
                       key=lambda n: (n != "ours", n))
        for name in names:
            xs, medians, lows, highs, rss = [], [], [], [], []
            for point in points:
                slot = point["results"].get(name, {})
                if "median" not in slot:
                    continue
                xs.append(point["value"])
                medians.append(slot["median"])
                lows.append(slot["median"] - slot["min"])
                highs.append(slot["max"] - slot["median"])
                rss.append(slot.get("peak_rss_mb_after"))
            if not xs:
                continue
            label = points[0]["labels"].get(name, name)
            speed.errorbar(xs, medians, yerr=[lows, highs], marker="o", capsize=3, label=label)
            memory.plot(xs, rss, marker="o", label=label)
        values = sorted({p["value"] for p in points})
        for ax, ylabel in ((speed, "tokens/s (median, min-max)"), (memory, "peak RSS (MB)")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(values, [str(v) for v in values])
            ax.minorticks_off()
            ax.set_xlabel(AXIS_TITLES.get(axis, axis))
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
        speed.legend(fontsize=8)
        result = data["points"][0]["result"]
        shares = [background_share(point["result"]) for point in data["points"]
                  if point["axis"] == axis]
        if None in shares:
            loads = [p["load"] for p in points]
            busy = f"load average {min(loads):.1f}-{max(loads):.1f}"
        else:
            busy = (f"nice {result['priority']['nice']}, others took "
                    f"{100 * min(shares):.0f}-{100 * max(shares):.0f}% of the CPU")
        figure.suptitle(f"GPT, {data['backend']}, tuning {data['tuning']}: "
                        f"{AXIS_TITLES.get(axis, axis)}\n{result['rounds']} rounds x "
                        f"{result['steps']} steps, {busy} on "
                        f"{result['machine']['cores']} cores, "
                        f"commit {result['git']['commit'][:7]}", fontsize=10)
        figure.tight_layout()
        png = _png_path(path, axis)
        figure.savefig(png, dpi=100)
        plt.close(figure)
        written.append(png)
    return written


def summary(results):
    """Lines for the root README: the equal-settings training ratios, ours over each peer."""
    lines = ["<!-- generated by benchmarks/render.py from benchmarks/results/*.json -->"]
    for benchmark, title in (("gpt", "GPT"), ("bert", "BERT MLM"), ("vit", "ViT"),
                             ("t5", "T5"), ("bart", "BART"), ("clip", "CLIP"),
                             ("diffusion", "Diffusion UNet")):
        runs = sorted((r for r in results
                       if r["benchmark"] == benchmark and not r.get("baseline_ref")),
                      key=lambda r: (BACKENDS.index(r["backend"]), r["tuning"]))
        for data in runs:
            for measure in [m for m in data["measure_order"] if m == "train"
                            or m.startswith(("generate_b1_", "generate_b8_", "ddim"))]:
                ours = data["measurements"].get(measure, {}).get("results", {}).get("ours")
                if not ours or "median" not in ours:
                    continue
                parts = [f"{number(ours['median'])} {ours['unit']}"]
                for peer in data["contenders"]:
                    entry = data["measurements"][measure]
                    if peer != "ours" and round_ratios(entry, peer):
                        parts.append(f"{ratio_parts(entry, peer)} {peer.replace('_', '-')}")
                lines.append(f"- {title} {measure_title(measure)}, {data['backend']}, tuning "
                             f"`{data['tuning']}` ({data['date'][:10]}, "
                             f"{rounds_text(data)}, {busy_text(data)} on "
                             f"{data['machine']['cores']} cores "
                             f"{data['machine']['cpu_model']}): ours " + ", ".join(parts))
    return lines


def render(results):
    lines = ["# Benchmarks", "",
             "<!-- Generated by benchmarks/render.py from benchmarks/results/*.json: edit the "
             "script or rerun the benchmarks, not this file. -->", "",
             "One script per family, all through one harness (`harness.py`); each writes its "
             "JSON to `results/`, and `render.py` writes this file from those JSON files. "
             "Speed is never asserted in tests.", "", METHOD, RERUN]
    lines += section("Attention block (`bench_attention.py`)",
                     "python benchmarks/bench_attention.py --backend {jax,tensorflow,torch} "
                     "--tuning {ours,none}", results, "attention",
                     "Causal self-attention, forward + backward as a compiled "
                     "`train_on_batch`. " + describe(results, "attention") + " Tokens/s.")
    lines += section("GPT training and generation (`bench_gpt.py`)",
                     "python benchmarks/bench_gpt.py --backend {jax,tensorflow,torch} "
                     "--tuning {ours,none}", results, "gpt", describe_gpt(results))
    lines += scaling_section(results)
    lines += section("BERT masked-LM training (`bench_bert.py`)",
                     "python benchmarks/bench_bert.py --backend {jax,tensorflow,torch} "
                     "--tuning {ours,none}", results, "bert",
                     describe(results, "bert") + " Tokens/s (input tokens).")
    lines += section("ViT training and inference (`bench_vit.py`)",
                     "python benchmarks/bench_vit.py --backend {jax,tensorflow,torch} "
                     "--tuning {ours,none}", results, "vit",
                     describe(results, "vit") + " Images/s.")
    lines += section("T5 training and generation (`bench_t5.py`)",
                     "python benchmarks/bench_t5.py --backend {jax,tensorflow,torch} "
                     "--tuning {ours,none}", results, "t5",
                     describe_seq2seq(results, "t5", "T5 v1.0 layout"))
    lines += section("BART training and generation (`bench_bart.py`)",
                     "python benchmarks/bench_bart.py --backend {jax,tensorflow,torch} "
                     "--tuning {ours,none}", results, "bart",
                     describe_seq2seq(results, "bart", "BART layout"))
    lines += section("CLIP contrastive training (`bench_clip.py`)",
                     "python benchmarks/bench_clip.py --backend {jax,tensorflow,torch} "
                     "--tuning {ours,none}", results, "clip",
                     describe(results, "clip") + " Images/s (image-text pairs).")
    lines += section("Diffusion UNet training and DDIM sampling (`bench_diffusion.py`)",
                     "python benchmarks/bench_diffusion.py --backend {jax,tensorflow,torch} "
                     "--tuning {ours,none}", results, "diffusion", describe_diffusion(results))
    lines += section("Data and model parallelism on simulated devices "
                     "(`bench_distribution.py`)",
                     "python benchmarks/bench_distribution.py --tuning ours", results,
                     "distribution", describe(results, "distribution") + " Tokens/s; "
                     "weight bytes on device 0 vs the planner in the JSON (`info`).")
    lines += ["## Summary for the root README", "", "Printed by `python benchmarks/render.py`:",
              ""] + summary(results) + [""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if README.md differs from what the JSON files give")
    parser.add_argument("--plots", action="store_true", help="redraw the scaling PNGs")
    parser.add_argument("--output", default=README)
    parser.add_argument("--results", default=RESULTS_DIR, help="folder of the JSON files")
    args = parser.parse_args(argv)
    if args.plots:
        for path in sorted(glob.glob(os.path.join(args.results, "gpt_scaling_*.json"))):
            for png in plot_scaling(path):
                print("wrote", png)
    results = load_results(args.results)
    text = render(results)
    if args.check:
        with open(args.output) as f:
            if f.read() != text:
                print(f"{args.output} is out of date: run python benchmarks/render.py")
                return 1
        return 0
    with open(args.output, "w") as f:
        f.write(text)
    print(f"wrote {args.output} from {len(results)} JSON files\n")
    print("\n".join(summary(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
