"""One benchmark harness for every `bench_*.py`: contenders in their own processes, rounds.

A bench script describes *contenders* (which library, which config, what to time) and hands
them to `run()`. The harness then:

- starts one worker process per contender (`python benchmarks/harness.py --worker`), so each
  contender's peak memory (max RSS) is its own and no library's import-time settings leak
  into another's process; peers' processes never import keras_bigmodels (checked and
  recorded per worker);
- gives every worker the same runtime settings: `--tuning ours` applies the settings of
  `keras_bigmodels.runtime.tune_cpu()` (replicated here, so a peer needs no import of ours),
  `--tuning none` applies none (and turns off the import-time tuning of older commits);
- measures a matmul peak per framework at the start of the run, for MFU (never above 1);
- runs each measurement in rounds, the contenders in alternating order (A B C, C B A, ...),
  each round `warmup` untimed steps then `steps` timed ones; records every step's seconds,
  each round's throughput, and the median, min and max over rounds;
- writes one JSON file with the git commit (and the files then modified), date, machine
  (cores, CPU model), load average before, during and after, library versions, config,
  steps, warm-up and the per-round values. `render.py` builds the README tables from it.

A contender's setup function (in its bench module, importable without side effects)
builds the model and returns ``({name: Measure(...)}, info)``; each `Measure.step` must block
until its result is computed (`train_on_batch`/`generate` return numpy, torch on CPU is
synchronous).

Example (in a bench script):
>>> contenders = [harness.Contender("ours", "bench_gpt", "setup_ours", library="ours"),
...               harness.Contender("transformers", "bench_gpt", "setup_transformers",
...                                 library="transformers", framework="torch")]
>>> harness.run("gpt", contenders, args, config={...}, flops_per_unit={"train": 1.2e7})
"""

import argparse
import contextlib
import dataclasses
import datetime
import importlib
import importlib.metadata
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BENCHMARKS_DIR = os.path.dirname(os.path.abspath(__file__))
REPOSITORY_ROOT = os.path.dirname(BENCHMARKS_DIR)
RESULTS_DIR = os.path.join(BENCHMARKS_DIR, "results")
HARNESS_VERSION = 1
PROTOCOL_PREFIX = "@@harness "
TUNINGS = ("none", "ours")
BACKENDS = ("jax", "tensorflow", "torch")
LIBRARIES = ("ours", "keras_hub", "transformers", "keras", "diffusers")
# Libraries that never touch Keras: their workers get no Keras/JAX-specific settings.
TORCH_ONLY_LIBRARIES = ("transformers", "diffusers")
# The environment as this process got it, before anything could add XLA_FLAGS etc.
BASE_ENVIRONMENT = os.environ.copy()
XLA_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"


@dataclasses.dataclass
class Measure:
    """What one contender times: a blocking `step` that processes `units` units of work.

    Args:
        step: callable with no arguments; must return only once its work is computed.
        units: units of work per call (tokens, images, sequences), for throughput.
        unit: the unit's name, e.g. "tokens".
    """

    step: object
    units: float
    unit: str = "tokens"


@dataclasses.dataclass
class Contender:
    """One contender: a setup function in a bench module, run in a worker process.

    Args:
        name: key in the results ("ours", "keras_hub", "transformers", "ours@abc1234").
        module: bench module name in benchmarks/ (e.g. "bench_gpt"), imported by the worker.
        function: setup function name in that module; called with `kwargs`, it returns
            `({measure_name: Measure}, info_dict)`.
        library: one of "ours", "keras_hub", "transformers", "keras" (plain Keras layers),
            "diffusers".
        framework: "jax", "tensorflow" or "torch": whose matmul peak its MFU uses.
        kwargs: JSON-serializable keyword arguments of the setup function.
        label: human-readable name for tables and plots.
        source_root: directory put first on the worker's sys.path for `keras_bigmodels`
            (a git worktree of another commit for a baseline); None: this checkout.
        environment: extra environment variables for the worker.

    Example:
    >>> Contender("ours", "bench_gpt", "setup_ours", library="ours", framework="jax")
    """

    name: str
    module: str
    function: str
    library: str = "ours"
    framework: str = "jax"
    kwargs: dict = dataclasses.field(default_factory=dict)
    label: str = None
    source_root: str = None
    environment: dict = dataclasses.field(default_factory=dict)
    commit: str = None

    def __post_init__(self):
        if self.library not in LIBRARIES:
            raise ValueError(f"`library` must be one of {LIBRARIES}; received {self.library!r}.")
        if self.framework not in BACKENDS:
            raise ValueError(f"`framework` must be one of {BACKENDS}; "
                             f"received {self.framework!r}.")
        self.label = self.label or self.name


# --------------------------------------------------------------------------------------
# Command line shared by every bench script.

def add_arguments(parser, rounds=3, steps=3, warmup=2):
    """Add the harness options (`--rounds`, `--steps`, `--tuning`, ...) to a parser.

    Example:
    >>> parser = argparse.ArgumentParser(); add_arguments(parser)
    """
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "jax"),
                        choices=BACKENDS, help="Keras backend of the Keras contenders")
    parser.add_argument("--rounds", type=int, default=rounds,
                        help="rounds per measurement, contenders in alternating order "
                             "(3 or more for results; fewer only to try the script)")
    parser.add_argument("--steps", type=int, default=steps, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=warmup,
                        help="untimed steps before each round's timed ones (the first "
                             "round's include compilation)")
    parser.add_argument("--tuning", default="none", choices=TUNINGS,
                        help="process settings for every contender: 'ours' = those of "
                             "keras_bigmodels.runtime.tune_cpu(), 'none' = defaults")
    parser.add_argument("--baseline-ref", default=None,
                        help="also run our library at this git commit (from a temporary "
                             "git worktree), alternating with the current tree")
    parser.add_argument("--peak-flops", type=float, default=None,
                        help="use this FLOP/s peak for every framework instead of measuring")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads in every torch worker (default: "
                             "torch's, one per core); 1 only on an oversubscribed CPU, "
                             "where OpenMP's waiting threads slow torch many-fold")
    parser.add_argument("--processes", type=int, default=1,
                        help="fresh worker processes per contender, one after another, "
                             "each running --rounds rounds: the spread then includes what "
                             "differs from process to process (e.g. where the allocator "
                             "places the buffers), not only from round to round")
    parser.add_argument("--output", default=None, help="JSON path (default: results/...)")
    return parser


def check_arguments(args):
    for name in ("rounds", "steps", "processes"):
        if getattr(args, name, 1) < 1:
            raise ValueError(f"`--{name}` must be at least 1; received {getattr(args, name)}.")
    if args.warmup < 0:
        raise ValueError(f"`--warmup` must be 0 or more; received {args.warmup}.")


# --------------------------------------------------------------------------------------
# Process settings.

def cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worker_environment(tuning, backend, extra=None):
    """The environment of a worker: the same for every contender of a run."""
    environment = dict(BASE_ENVIRONMENT)
    environment["KERAS_BACKEND"] = backend
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Older commits of keras_bigmodels applied their tuning at import; these turn it off
    # there, so that --tuning alone decides (the current tree applies nothing at import).
    environment["KERAS_BIGMODELS_MALLOC_TUNING"] = "0"
    environment["KERAS_BIGMODELS_XLA_CPU_TUNING"] = "0"
    extra = dict(extra or {})
    flags = f"{environment.get('XLA_FLAGS', '')} {extra.pop('XLA_FLAGS', '')}".strip()
    if tuning == "ours" and XLA_SCHEDULER_FLAG not in flags and cpu_count() <= 4:
        flags = f"{flags} {XLA_SCHEDULER_FLAG}=false".strip()
    if flags:
        environment["XLA_FLAGS"] = flags
    environment.update(extra)
    return environment


def apply_process_tuning(tuning, backend, uses_keras):
    """In a worker, before any framework import: tune_cpu()'s settings, or none.

    Returns a dict describing what was applied (recorded in the JSON).
    """
    applied = {"tuning": tuning, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
    if tuning != "ours":
        return applied
    # glibc keeps freed blocks in its heap instead of unmapping them after every step
    # (same constants as keras_bigmodels.runtime: M_MMAP_MAX=-4, M_TRIM_THRESHOLD=-1).
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        applied["mallopt_M_MMAP_MAX_0"] = bool(libc.mallopt(-4, 0))
        applied["mallopt_M_TRIM_THRESHOLD_2GB"] = bool(libc.mallopt(-1, 2**31 - 1))
    except OSError:
        applied["mallopt"] = "unavailable (not glibc)"
    if uses_keras and backend == "jax":
        import jax

        jax.config.update("jax_cpu_enable_async_dispatch", False)
        applied["jax_cpu_enable_async_dispatch"] = False
    return applied


# --------------------------------------------------------------------------------------
# Helpers for bench modules (they run inside workers).

def keras_train_step(model, x, y, sample_weight=None):
    """A blocking `train_on_batch` step that returns the names it logs (to show no metrics).

    Example:
    >>> measure = Measure(keras_train_step(model, x, y), units=x.size)
    """
    def step():
        logs = model.train_on_batch(x, y, sample_weight=sample_weight, return_dict=True)
        return sorted(logs)
    return step


def set_torch_threads(threads):
    if threads:
        import torch

        torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------
# Encoder-decoder helpers shared by bench_t5.py and bench_bart.py: the same batches,
# prompts, steps and FLOP count for every contender, whatever the family.

def generation_name(job):
    """The measure name of a generation job: "generate_b8_n32" or "beam4_b1_n32" (render.py
    reads the batch and token count back from it).

    Example:
    >>> generation_name({"batch": 1, "new_tokens": 32, "beams": 4})
    'beam4_b1_n32'
    """
    if job.get("beams"):
        return f"beam{job['beams']}_b{job['batch']}_n{job['new_tokens']}"
    return f"generate_b{job['batch']}_n{job['new_tokens']}"


def generation_jobs(batches, beam_batches, num_beams, new_tokens, prompt_length):
    """Greedy jobs at `batches`, then beam jobs (`num_beams` beams) at `beam_batches`."""
    jobs = [dict(batch=b, new_tokens=new_tokens, prompt_length=prompt_length) for b in batches]
    if num_beams:
        jobs += [dict(batch=b, new_tokens=new_tokens, prompt_length=prompt_length,
                      beams=num_beams) for b in beam_batches]
    return jobs


# Ids below this are left out of random data: every family's special ids (T5 0-1, BART
# 0-3) stay out of inputs and labels, so no side treats a token as padding or a stop.
FIRST_ORDINARY_ID = 4


def seq2seq_batch(vocabulary_size, batch, source, target, start_id):
    """A teacher-forced batch without padding: encoder ids [batch, source], decoder inputs
    (labels shifted right behind `start_id`) and labels [batch, target], numpy int32."""
    import numpy as np

    rng = np.random.default_rng(0)
    encoder = rng.integers(FIRST_ORDINARY_ID, vocabulary_size, (batch, source)).astype("int32")
    labels = rng.integers(FIRST_ORDINARY_ID, vocabulary_size, (batch, target)).astype("int32")
    decoder = np.concatenate([np.full((batch, 1), start_id, "int32"), labels[:, :-1]], axis=1)
    return encoder, decoder, labels


def seq2seq_prompts(vocabulary_size, job):
    """Encoder inputs of a generation job: [batch, prompt_length] ids, numpy int32."""
    import numpy as np

    rng = np.random.default_rng(1)
    return rng.integers(FIRST_ORDINARY_ID, vocabulary_size,
                        (job["batch"], job["prompt_length"])).astype("int32")


def seq2seq_training_flops(vocabulary_size, hidden_dim, intermediate_dim, num_heads,
                           head_dim, encoder_layers, decoder_layers, source, target):
    """Model FLOPs of one training example (forward + backward = 3 x forward): every
    matmul (projections on the tokens they read: cross-attention keys/values on the source,
    the output layer on the target) plus the attention scores and their products, masked
    entries included (as 12LHQT counts them). Norms, softmax and lookups are left out."""
    inner = num_heads * head_dim
    d, f = hidden_dim, intermediate_dim
    encoder = encoder_layers * (source * (4 * d * inner + 2 * d * f)
                                + 2 * source * source * inner)
    decoder = decoder_layers * (target * (6 * d * inner + 2 * d * f) + source * 2 * d * inner
                                + 2 * target * target * inner + 2 * target * source * inner)
    output = target * vocabulary_size * d
    return 3 * 2 * (encoder + decoder + output)


def add_seq2seq_arguments(parser, new_tokens=32, prompt_length=128):
    """The generation options of an encoder-decoder bench script."""
    parser.add_argument("--contenders", nargs="+", default=["ours", "keras_hub", "transformers"],
                        choices=["ours", "keras_hub", "transformers"])
    parser.add_argument("--new-tokens", type=int, default=new_tokens)
    parser.add_argument("--prompt-length", type=int, default=prompt_length,
                        help="encoder input length of the generation timings")
    parser.add_argument("--generate-batches", type=int, nargs="*", default=[1, 8],
                        help="batch sizes of the greedy generation timings (none: skip)")
    parser.add_argument("--beam-batches", type=int, nargs="*", default=[1, 8],
                        help="batch sizes of the beam-search timings (none: skip)")
    parser.add_argument("--num-beams", type=int, default=4, help="beams (0: skip beam search)")
    parser.add_argument("--no-train", action="store_true", help="generation timings only")
    return parser


def seq2seq_main(benchmark, module, labels, config, batch, source, target, flops_per_token,
                 fused, description, argv=None, learning_rate=1e-4, weight_decay=0.004):
    """The driver of an encoder-decoder bench script: options, contenders, notes, run.

    Args:
        benchmark: the results' name ("t5"); module: the script's module name, whose
            `setup_ours` / `setup_keras_hub` / `setup_transformers` the workers call.
        labels: {contender: label}. config, batch, source, target: the reference step.
        flops_per_token: training FLOPs per (encoder + target) token.
        fused: what ours fuses into the loss on jax/torch, for the notes.
        description: the script's one-line description; argv: its arguments.
        learning_rate, weight_decay: the AdamW every side uses, for the notes.
    """
    parser = argparse.ArgumentParser(description=description)
    add_arguments(parser)
    add_seq2seq_arguments(parser, new_tokens=target, prompt_length=source)
    args = parser.parse_args(argv)
    generate = generation_jobs(args.generate_batches, args.beam_batches, args.num_beams,
                               args.new_tokens, args.prompt_length)
    kwargs = dict(config=dict(config), batch=batch, source=source, target=target,
                  train=not args.no_train, generate=generate)
    contenders = [Contender(name, module, f"setup_{name}", library=name,
                            framework="torch" if name == "transformers" else args.backend,
                            kwargs=kwargs, label=labels[name]) for name in args.contenders]
    notes = [
        f"Same work per training step on every side: encoder {batch} x {source} and decoder "
        f"{batch} x {target} tokens, cross-entropy over the full vocabulary at all "
        f"{batch * target} target positions, mean (ours fuses {fused} on jax/torch; the "
        f"FLOPs are the same), no compiled metrics, AdamW({learning_rate:g}, weight decay "
        f"{weight_decay:g}), no gradient clipping.",
        "Training tokens/s count encoder plus target tokens. Generation tokens/s count new "
        "tokens; every side writes exactly the requested number (transformers with "
        "min_new_tokens = max_new_tokens, ours and keras-hub with no stop token).",
        "transformers is plain PyTorch eager whatever the Keras backend.",
        "Optimizers: ours keras_bigmodels.optimizers.FusedAdamW (Keras AdamW's formula; on "
        "torch one fused update kernel, on tensorflow one XLA-compiled update of all "
        "weights, on jax AdamW itself), keras-hub keras.optimizers.AdamW, transformers "
        "torch.optim.AdamW (its default foreach update); the same arithmetic per step (on "
        "tensorflow Keras' AdamW squares the rows of an embedding's sparse gradient before "
        "summing repeated ids; FusedAdamW sums first, as jax, torch and transformers do).",
    ]
    return run(benchmark, contenders, args, config=kwargs, notes=notes,
               flops_per_unit={"train": flops_per_token},
               measure_order=["train"] + [generation_name(j) for j in generate])


def seq2seq_measures_ours(lm, batch, source, target, train, generate):
    """{measure: Measure} of a keras_bigmodels `Seq2SeqLM` (compiled by the caller)."""
    encoder, decoder, labels = seq2seq_batch(lm.backbone.vocabulary_size, batch, source,
                                             target, lm.decoder_start_token_id)
    measures = {}
    if train:
        import numpy as np

        x = {"encoder_token_ids": encoder, "encoder_padding_mask": np.ones_like(encoder),
             "decoder_token_ids": decoder, "decoder_padding_mask": np.ones_like(decoder)}
        measures["train"] = Measure(keras_train_step(lm, x, labels), batch * (source + target))
    for job in generate:
        prompts = seq2seq_prompts(lm.backbone.vocabulary_size, job)
        options = dict(sampler="beam", num_beams=job["beams"]) if job.get("beams") else {}

        def step(prompts=prompts, job=job, options=options):
            lm.generate(prompts, max_new_tokens=job["new_tokens"], stop_token_ids=None,
                        **options)
        measures[generation_name(job)] = Measure(step, job["batch"] * job["new_tokens"])
    return measures


def seq2seq_measures_keras_hub(lm, compile_with, start_id, batch, source, target, train,
                               generate):
    """{measure: Measure} of a keras-hub `Seq2SeqLM` built with `preprocessor=None`.

    `compile_with(sampler)` compiles it (no metrics); keras-hub takes the sampler at
    compile time, so a beam job recompiles outside the timed steps (in its warm-up).
    """
    import numpy as np

    vocabulary_size = lm.backbone.vocabulary_size
    state = {"sampler": "greedy"}
    compile_with("greedy")
    encoder, decoder, labels = seq2seq_batch(vocabulary_size, batch, source, target, start_id)
    measures = {}
    if train:
        x = {"encoder_token_ids": encoder, "encoder_padding_mask": np.ones_like(encoder, bool),
             "decoder_token_ids": decoder, "decoder_padding_mask": np.ones_like(decoder, bool)}
        measures["train"] = Measure(keras_train_step(lm, x, labels), batch * (source + target))
    samplers = {}
    for job in generate:
        prompts = seq2seq_prompts(vocabulary_size, job)
        # keras-hub decodes up to the length of its decoder input: the start id, then empty
        # slots for the new tokens.
        ids = np.zeros((job["batch"], 1 + job["new_tokens"]), "int32")
        ids[:, 0] = start_id
        mask = np.zeros(ids.shape, bool)
        mask[:, 0] = True
        inputs = {"encoder_token_ids": prompts,
                  "encoder_padding_mask": np.ones_like(prompts, bool),
                  "decoder_token_ids": ids, "decoder_padding_mask": mask}
        beams = job.get("beams")
        if beams and beams not in samplers:
            import keras_hub

            samplers[beams] = keras_hub.samplers.BeamSampler(num_beams=beams)

        def step(inputs=inputs, beams=beams):
            wanted = samplers[beams] if beams else "greedy"
            if state["sampler"] != wanted:
                compile_with(wanted)
                state["sampler"] = wanted
            lm.generate(inputs, stop_token_ids=None)
        measures[generation_name(job)] = Measure(step, job["batch"] * job["new_tokens"])
    return measures


def seq2seq_measures_transformers(model, optimizer, start_id, vocabulary_size, batch, source,
                                  target, train, generate):
    """{measure: Measure} of a transformers encoder-decoder (`...ForConditionalGeneration`):
    training computes the logits and a mean cross-entropy over every label; generation
    writes exactly `new_tokens` tokens (min = max, no early stop)."""
    import torch

    measures = {}
    if train:
        encoder, decoder, labels = (torch.tensor(a, dtype=torch.long) for a in seq2seq_batch(
            vocabulary_size, batch, source, target, start_id))

        def train_step():
            model.train()
            logits = model(input_ids=encoder, attention_mask=torch.ones_like(encoder),
                           decoder_input_ids=decoder,
                           decoder_attention_mask=torch.ones_like(decoder)).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                     labels.reshape(-1))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        measures["train"] = Measure(train_step, batch * (source + target))
    for job in generate:
        prompts = torch.tensor(seq2seq_prompts(vocabulary_size, job), dtype=torch.long)
        options = (dict(num_beams=job["beams"], early_stopping=False) if job.get("beams")
                   else dict(num_beams=1))

        def step(prompts=prompts, job=job, options=options):
            model.eval()
            with torch.no_grad():
                model.generate(prompts, attention_mask=torch.ones_like(prompts),
                               max_new_tokens=job["new_tokens"],
                               min_new_tokens=job["new_tokens"], do_sample=False,
                               decoder_start_token_id=start_id, **options)
        measures[generation_name(job)] = Measure(step, job["batch"] * job["new_tokens"])
    return measures


def setup_from_results(results, contender):
    """A contender of a results JSON rebuilt in this process, as its worker built it (the
    same setup function of bench_<benchmark>.py and keyword arguments); for the profilers.

    Returns:
        ({measure: Measure}, info).
    """
    record = results["contenders"][contender]
    module = importlib.import_module(f"bench_{results['benchmark']}")
    return getattr(module, record["setup"])(**record["kwargs"])


# --------------------------------------------------------------------------------------
# Worker side.

def _worker_main():
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints of the libraries go to the worker's log, not the protocol
    sys.stdout = sys.stderr

    def send(message):
        protocol.write(PROTOCOL_PREFIX + json.dumps(message) + "\n")
        protocol.flush()

    spec = json.loads(sys.stdin.readline())
    applied = apply_process_tuning(spec["tuning"], spec["backend"],
                                   spec["library"] not in TORCH_ONLY_LIBRARIES)
    if spec.get("source_root"):
        sys.path.insert(0, spec["source_root"])
    sys.path.insert(0, BENCHMARKS_DIR)
    try:
        if spec["framework"] == "torch" or spec["backend"] == "torch":
            set_torch_threads(spec.get("torch_threads"))
        module = importlib.import_module(spec["module"])
        measures, info = getattr(module, spec["function"])(**spec["kwargs"])
    except Exception as error:  # reported, so the other contenders still run
        send({"error": f"setup: {type(error).__name__}: {error}"})
        raise
    send({"ready": True, "info": info, "applied_settings": applied,
          "measures": {name: {"units": m.units, "unit": m.unit} for name, m in measures.items()}})
    for line in sys.stdin:
        command = json.loads(line)
        if command["command"] == "quit":
            break
        measure = measures[command["measure"]]
        try:
            returned = None
            for _ in range(command["warmup"]):
                returned = measure.step()
            seconds = []
            for _ in range(command["steps"]):
                start = time.perf_counter()
                returned = measure.step()
                seconds.append(time.perf_counter() - start)
        except Exception as error:
            send({"error": f"{command['measure']}: {type(error).__name__}: {error}"})
            continue
        send({"seconds": seconds, "peak_rss_mb": _peak_rss_mb(),
              "returned": returned if isinstance(returned, list) else None})
    send(_worker_facts())


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker_facts():
    facts = {"peak_rss_mb": _peak_rss_mb(),
             "imported_keras_bigmodels": "keras_bigmodels" in sys.modules, "versions": {}}
    if "keras_bigmodels" in sys.modules:
        facts["keras_bigmodels_file"] = sys.modules["keras_bigmodels"].__file__
    for name in ("keras", "keras_hub", "transformers", "diffusers", "torch", "jax",
                 "tensorflow"):
        if name in sys.modules:
            facts["versions"][name] = getattr(sys.modules[name], "__version__", None)
    if "torch" in sys.modules:
        facts["torch_threads"] = sys.modules["torch"].get_num_threads()
    return facts


def _peak_main(framework, sizes):
    """Worker mode: best FLOP/s of square float32 matmuls in `framework`."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    apply_process_tuning(os.environ.get("HARNESS_TUNING", "none"), framework, True)
    if framework == "torch" and os.environ.get("HARNESS_TORCH_THREADS"):
        set_torch_threads(int(os.environ["HARNESS_TORCH_THREADS"]))
    best, runs = 0.0, []
    for size, repeats in sizes:
        matmul = _matmul_function(framework, size)
        matmul()  # compile, fault in the buffers
        for _ in range(repeats):
            start = time.perf_counter()
            matmul()
            rate = 2 * size**3 / (time.perf_counter() - start)
            runs.append({"size": size, "flops_per_second": rate})
            best = max(best, rate)
    protocol.write(PROTOCOL_PREFIX + json.dumps({"flops_per_second": best, "runs": runs}) + "\n")


def _matmul_function(framework, size):
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    if framework == "jax":
        import jax

        a, b = jax.device_put(a), jax.device_put(b)
        product = jax.jit(lambda p, q: p @ q)
        return lambda: product(a, b).block_until_ready()
    if framework == "tensorflow":
        import tensorflow as tf

        a, b = tf.constant(a), tf.constant(b)
        product = tf.function(lambda p, q: tf.linalg.matmul(p, q))
        return lambda: product(a, b).numpy()
    import torch

    a, b = torch.from_numpy(a), torch.from_numpy(b)
    return lambda: torch.mm(a, b)


# --------------------------------------------------------------------------------------
# Parent side.

class _Worker:
    def __init__(self, contender, spec, environment, log_dir):
        self.contender = contender
        self.log_path = os.path.join(log_dir, f"{contender.name.replace('@', '_')}.log")
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.log, env=environment, text=True,
            cwd=BENCHMARKS_DIR)
        self.send(spec)
        self.error = None

    def send(self, message):
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def receive(self):
        for line in self.process.stdout:
            if line.startswith(PROTOCOL_PREFIX):
                return json.loads(line[len(PROTOCOL_PREFIX):])
        self.process.wait()
        return {"error": f"worker exited ({self.process.returncode}): {self.log_tail()}"}

    def log_tail(self):
        self.log.flush()
        with open(self.log_path) as f:
            lines = [line.strip() for line in f if line.strip()]
        return lines[-1] if lines else "no output"

    def close(self):
        facts = {}
        if self.process.poll() is None:
            try:
                self.send({"command": "quit"})
                facts = self.receive()
            except (BrokenPipeError, OSError):
                pass
            self.process.wait()
        self.log.close()
        return facts


def git_facts(root=REPOSITORY_ROOT):
    """Commit, date and the tracked files modified at run time (a shared checkout)."""
    def git(*arguments):
        result = subprocess.run(["git", "-C", root, *arguments], capture_output=True,
                                text=True)
        return result.stdout

    dirty = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no",
                                      "--", "keras_bigmodels", "benchmarks").splitlines()]
    return {"commit": git("rev-parse", "HEAD").strip(),
            "commit_date": git("log", "-1", "--format=%cI").strip(),
            "modified_files": dirty}


def machine_facts():
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gb = None
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        pass
    return {"cores": cpu_count(), "cpu_count": os.cpu_count(), "cpu_model": model,
            "memory_gb": memory_gb, "platform": sys.platform, "python": sys.version.split()[0]}


def cpu_snapshot():
    """CPU seconds the whole machine spent busy, and this process tree's own, right now.

    The difference of two snapshots is the CPU time *other* processes took during a run
    (`background_cpu_seconds` in the JSON): load average counts runnable tasks, this says how
    much CPU they actually got. None where /proc/stat is absent (not Linux).
    """
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                  resource.RUSAGE_CHILDREN)]
    own = sum(u.ru_utime + u.ru_stime for u in usage)
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None, own
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait.
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK"), own


def process_cpu_seconds(pid):
    """User + system CPU seconds of one live process (Linux /proc), None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, man proc).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def background_seconds(before, after):
    """CPU seconds that processes other than the measured worker took between two snapshots
    of (machine busy seconds, worker CPU seconds); the harness's own share is negligible."""
    if None in (*before, *after):
        return None
    return round((after[0] - before[0]) - (after[1] - before[1]), 2)


def priority_facts():
    """This process's scheduling: its nice value and policy (recorded with every run)."""
    policy = None
    if hasattr(os, "sched_getscheduler"):
        policy = {getattr(os, "SCHED_OTHER", 0): "other",
                  getattr(os, "SCHED_BATCH", 3): "batch",
                  getattr(os, "SCHED_IDLE", 5): "idle"}.get(os.sched_getscheduler(0))
    return {"nice": os.getpriority(os.PRIO_PROCESS, 0), "policy": policy}


def library_versions():
    versions = {}
    for name in ("keras", "jax", "jaxlib", "tensorflow", "torch", "transformers", "diffusers",
                 "keras-hub", "numpy"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def measure_peaks(frameworks, tuning, backend, given=None, torch_threads=None):
    """{framework: {"flops_per_second", "source", ...}}: a matmul per framework, or `given`."""
    peaks = {}
    for framework in sorted(set(frameworks)):
        if given:
            peaks[framework] = {"flops_per_second": given, "source": "--peak-flops"}
            continue
        environment = worker_environment(tuning, framework)
        environment["HARNESS_TUNING"] = tuning
        if torch_threads:
            environment["HARNESS_TORCH_THREADS"] = str(torch_threads)
        # Large products only (a 512^2 one fits in cache and reads up to twice the rate of
        # the model's matmuls), but 1024^2 too: on one torch thread it can beat 2048^2.
        sizes = "1024x10,2048x8,4096x2"
        process = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--peak", framework, sizes],
            capture_output=True, text=True, env=environment)
        lines = [line for line in process.stdout.splitlines()
                 if line.startswith(PROTOCOL_PREFIX)]
        if not lines:
            tail = (process.stderr.strip().splitlines() or ["no output"])[-1]
            peaks[framework] = {"flops_per_second": None, "source": f"failed: {tail}"}
            continue
        measured = json.loads(lines[-1][len(PROTOCOL_PREFIX):])
        measured["load_average"] = os.getloadavg()[0]
        peaks[framework] = {**measured, "source": f"best float32 matmul ({sizes}), "
                                                  "measured at the start of the run"}
    return peaks


class Baseline:
    """Our library at another commit, checked out in a temporary `git worktree`.

    Example:
    >>> with Baseline("HEAD~3") as baseline:
    ...     print(baseline.commit, baseline.path)  # path holds keras_bigmodels at HEAD~3
    """

    def __init__(self, ref):
        self.ref = ref
        self.path = None

    def __enter__(self):
        commit = subprocess.run(["git", "-C", REPOSITORY_ROOT, "rev-parse", "--verify",
                                 f"{self.ref}^{{commit}}"], capture_output=True, text=True)
        if commit.returncode:
            raise ValueError(f"`--baseline-ref` must name a commit; received {self.ref!r}.")
        self.commit = commit.stdout.strip()
        self.path = tempfile.mkdtemp(prefix="kbm-baseline-")
        subprocess.run(["git", "-C", REPOSITORY_ROOT, "worktree", "add", "--detach", "--quiet",
                        self.path, self.commit], check=True)
        return self

    def __exit__(self, *exc):
        subprocess.run(["git", "-C", REPOSITORY_ROOT, "worktree", "remove", "--force",
                        self.path], capture_output=True)
        shutil.rmtree(self.path, ignore_errors=True)
        subprocess.run(["git", "-C", REPOSITORY_ROOT, "worktree", "prune"], capture_output=True)


def summarize(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run(benchmark, contenders, args, config, flops_per_unit=None, measure_order=None,
        output=None, notes=None, write=True, peaks=None):
    """Run `contenders` through every measurement in alternating rounds; write the JSON.

    Args:
        benchmark: name of the benchmark ("gpt"); the default output is
            results/<benchmark>_<backend>_<tuning>.json.
        contenders: list of `Contender`; with `args.baseline_ref`, a copy of each
            `library="ours"` contender runs from a worktree at that commit too.
        args: parsed options of `add_arguments`.
        config: the benchmark's configuration, recorded as is.
        flops_per_unit: {measure: FLOPs per unit} for MFU, or {measure: {contender: ...}}
            where a contender does different work.
        measure_order: order of the measurements (default: as the first contender gives).
        output: JSON path (default from `args.output` or the benchmark name).
        notes: list of strings recorded with the results (what a reader must know).
        write: write the JSON (False: only return it).
        peaks: peaks from an earlier `measure_peaks` of the same run (default: measure).

    Returns:
        the results dict.
    """
    check_arguments(args)
    with contextlib.ExitStack() as stack:
        if args.baseline_ref:
            baseline = stack.enter_context(Baseline(args.baseline_ref))
            short = baseline.commit[:7]
            contenders = list(contenders) + [
                dataclasses.replace(c, name=f"{c.name}@{short}", label=f"{c.label} @ {short}",
                                    source_root=baseline.path, commit=baseline.commit)
                for c in contenders if c.library == "ours"]
            # A before/after run must not overwrite the reference results of the benchmark.
            output = output or args.output or os.path.join(
                RESULTS_DIR, f"{benchmark}_{args.backend}_{args.tuning}_vs_{short}.json")
        return _run(benchmark, contenders, args, config, flops_per_unit or {}, measure_order,
                    output, notes or [], write, peaks)


def _start_workers(contenders, args, log_dir, git, records, process):
    """A fresh worker per contender (one at a time: builds do not compete for the cores);
    the first process's setup goes into `records`. Returns the ready workers."""
    workers = []
    for contender in contenders:
        record = records.get(contender.name)
        if record is not None and "error" in record:
            continue  # failed in an earlier process
        spec = {"module": contender.module, "function": contender.function,
                "kwargs": contender.kwargs, "library": contender.library,
                "framework": contender.framework, "backend": args.backend, "tuning": args.tuning,
                "source_root": contender.source_root or REPOSITORY_ROOT,
                "torch_threads": args.torch_threads}
        if contender.library not in ("ours",):
            spec["source_root"] = None  # peers: nothing of ours on their path
        environment = worker_environment(args.tuning, args.backend, contender.environment)
        process_log_dir = os.path.join(log_dir, str(process))
        os.makedirs(process_log_dir, exist_ok=True)
        worker = _Worker(contender, spec, environment, process_log_dir)
        ready = worker.receive()
        if record is None:
            record = records[contender.name] = {
                "label": contender.label, "library": contender.library,
                "framework": contender.framework, "setup": contender.function,
                "kwargs": contender.kwargs, "commit": contender.commit or git["commit"]}
        if "error" in ready:
            record["error"] = ready["error"]
            print(f"  {contender.name}: failed: {ready['error']}", flush=True)
            worker.close()
            continue
        if "measures" not in record:
            record.update(info=ready["info"], applied_settings=ready["applied_settings"],
                          measures=ready["measures"])
        workers.append(worker)
    return workers


def _measure_round(worker, sequence, measure, args, records, entry, process, round_in_process):
    """One contender's round of `measure`: warm-up and timed steps, appended to `entry`."""
    name = worker.contender.name
    if "error" in records[name]:
        return
    before = (cpu_snapshot()[0], process_cpu_seconds(worker.process.pid))
    call_started = time.perf_counter()
    worker.send({"command": "measure", "measure": measure, "steps": args.steps,
                 "warmup": args.warmup})
    reply = worker.receive()
    after = (cpu_snapshot()[0], process_cpu_seconds(worker.process.pid))
    call_seconds = time.perf_counter() - call_started
    slot = entry["results"].setdefault(name, {"rounds": []})
    if "error" in reply:
        slot["error"] = reply["error"]
        print(f"  {measure} {name}: failed: {reply['error']}", flush=True)
        if worker.process.poll() is not None:
            records[name]["error"] = reply["error"]
        return
    described = records[name]["measures"][measure]
    seconds = reply["seconds"]
    slot["rounds"].append({
        "seconds": seconds, "value": described["units"] * len(seconds) / sum(seconds),
        "position": sequence.index(worker), "process": process,
        # Warm-up and timed steps together: what other processes took meanwhile.
        "wall_seconds": round(call_seconds, 3),
        "background_cpu_seconds": background_seconds(before, after)})
    slot["unit"] = described["unit"] + "/s"
    slot["units_per_step"] = described["units"]
    slot["peak_rss_mb_after"] = max(reply["peak_rss_mb"], slot.get("peak_rss_mb_after", 0))
    if reply.get("returned") is not None:
        slot["step_returned"] = reply["returned"]
    print(f"  {measure:<18} round {round_in_process + 1}"
          f"{f' (process {process + 1})' if getattr(args, 'processes', 1) > 1 else ''}"
          f"  {name:<22} "
          f"{slot['rounds'][-1]['value']:12,.1f} {slot['unit']}", flush=True)


def _run(benchmark, contenders, args, config, flops_per_unit, measure_order, output, notes,
         write, peaks):
    started = datetime.datetime.now(datetime.timezone.utc).astimezone()
    git = git_facts()
    processes = getattr(args, "processes", 1)
    results = {
        "harness_version": HARNESS_VERSION, "benchmark": benchmark, "backend": args.backend,
        "tuning": args.tuning, "command": [os.path.basename(sys.argv[0]), *sys.argv[1:]],
        "git": git, "date": started.isoformat(timespec="seconds"),
        "machine": machine_facts(), "versions": library_versions(),
        "load_average_before": list(os.getloadavg()), "config": config,
        "rounds": args.rounds, "processes": processes, "steps": args.steps,
        "warmup": args.warmup,
        "warmup_note": "warm-up steps run untimed before every round's timed steps",
        "torch_threads": args.torch_threads, "notes": notes,
        "baseline_ref": getattr(args, "baseline_ref", None),
        "priority": priority_facts(),
    }
    cpu_before = cpu_snapshot()
    print(f"[{benchmark}] {args.backend}, tuning {args.tuning}, {args.rounds} rounds x "
          f"{args.steps} steps (+{args.warmup} warm-up), load {os.getloadavg()[0]:.2f}",
          flush=True)
    results["peak_flops"] = peaks or measure_peaks(
        [c.framework for c in contenders], args.tuning, args.backend, args.peak_flops,
        args.torch_threads)
    for framework, peak in results["peak_flops"].items():
        print(f"  peak {framework}: {(peak['flops_per_second'] or 0) / 1e9:.0f} GFLOP/s",
              flush=True)
    log_dir = tempfile.mkdtemp(prefix=f"bench-{benchmark}-")
    records, measurements, load_during, order = {}, {}, [], list(measure_order or [])
    round_index = 0  # over all processes, so that the order keeps alternating
    for process in range(processes):
        workers = _start_workers(contenders, args, log_dir, git, records, process)
        for worker in workers:
            for name in records[worker.contender.name]["measures"]:
                if name not in order:
                    order.append(name)
        for measure in order:
            entry = measurements.setdefault(measure, {"results": {}})
            participants = [w for w in workers
                            if measure in records[w.contender.name]["measures"]]
            for index in range(round_index, round_index + args.rounds):
                sequence = participants if index % 2 == 0 else participants[::-1]
                for worker in sequence:
                    _measure_round(worker, sequence, measure, args, records, entry, process,
                                   index - round_index)
                load_during.append(os.getloadavg()[0])
        round_index += args.rounds
        for worker in workers:
            facts = worker.close()
            record = records[worker.contender.name]
            record.setdefault("worker_pids", []).append(worker.process.pid)
            if facts:
                imported = (record.get("imported_keras_bigmodels", False)
                            or facts.get("imported_keras_bigmodels", False))
                facts["peak_rss_mb"] = max(facts.get("peak_rss_mb", 0),
                                           record.get("peak_rss_mb", 0))
                record.update(facts, imported_keras_bigmodels=imported)
            if worker.contender.library != "ours" and record.get("imported_keras_bigmodels"):
                record["error"] = "a peer imported keras_bigmodels"
    results["measure_order"] = order
    for measure, entry in measurements.items():
        for name, slot in entry["results"].items():
            values = [r["value"] for r in slot["rounds"]]
            if not values:
                continue
            slot.update(summarize(values))
            flops = flops_per_unit.get(measure)
            if isinstance(flops, dict):
                flops = flops.get(name, flops.get(name.split("@")[0]))
            peak = results["peak_flops"][records[name]["framework"]]["flops_per_second"]
            if flops and peak:
                slot["flops_per_unit"] = flops
                mfu = {key: slot[key] * flops / peak for key in ("median", "min", "max")}
                if mfu["max"] > 1:
                    # Model FLOPs above the measured peak: the count or the peak is wrong;
                    # no MFU is better than an impossible one.
                    slot["mfu"] = None
                    slot["mfu_note"] = (f"{mfu['max']:.2f} > 1: model FLOP/s above the "
                                        "matmul peak measured at the start (a peak taken "
                                        "under load, or a wrong FLOP count)")
                else:
                    slot["mfu"] = mfu
    shutil.rmtree(log_dir, ignore_errors=True)
    results["contenders"] = records
    results["measurements"] = measurements
    results["load_average_during"] = load_during
    results["load_average_after"] = list(os.getloadavg())
    cpu_after = cpu_snapshot()
    if cpu_before[0] is not None:
        results["background_cpu_seconds"] = round(
            (cpu_after[0] - cpu_before[0]) - (cpu_after[1] - cpu_before[1]), 1)
    results["date_end"] = datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(
        timespec="seconds")
    if write:
        path = output or args.output or os.path.join(
            RESULTS_DIR, f"{benchmark}_{args.backend}_{args.tuning}.json")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
        results["path"] = path
        print(f"wrote {path} (load {results['load_average_before'][0]:.2f} before, "
              f"{results['load_average_after'][0]:.2f} after, "
              f"{results.get('background_cpu_seconds')} CPU s by other processes)", flush=True)
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker_main()
    elif sys.argv[1:2] == ["--peak"]:
        _peak_main(sys.argv[2], [tuple(int(n) for n in part.split("x"))
                                 for part in sys.argv[3].split(",")])
    else:
        raise SystemExit(__doc__.split("\n\n")[0] + "\nRun a bench_*.py script instead.")
