"""Host-side checks that ids and labels lie in the ranges a task declares, before they train.

A compiled step cannot raise on a bad value: an id past the end of an embedding table
reads garbage or NaN on JAX, clamps on TensorFlow's XLA, and a label >= num_classes gives
a wrong (or NaN) loss, so the weights are corrupted silently. Each `Task` therefore
declares the integer ranges of its inputs (`input_ranges()`) and labels (`label_range()`),
and its `fit`, `evaluate`, `predict`, `train_on_batch`, `test_on_batch` and
`predict_on_batch` check the data on the host with numpy:

- arrays and tensors: all of them, once, before the first step;
- Python generators, `keras.utils.PyDataset`s, `tf.data.Dataset`s (on every backend) and
  torch `DataLoader`s: each batch as it is produced, so the first bad batch raises before
  it trains.

A bad value raises a `ValueError` naming the input (or label), the value, where it is
and the allowed range. A label equal to the compiled loss's `ignore_class` is allowed.
Data of other kinds (grain, distributed datasets) passes unchecked.

Cost: a min and a max per checked array (plus a mask on the rare error path). Measured
on the 2-core development machine (shared, load ~10) for a [32, 128] batch of token ids
and labels (GPT): 10-20 us per batch on the host (generator, PyDataset, DataLoader,
`train_on_batch`), ~60 us for BERT's four arrays; 0.25-0.3 ms through
`tf.numpy_function` in a `tf.data` map (call overhead; it runs in the input pipeline);
one training step of a 2-layer, 64-wide GPT (vocabulary 1000) on that batch: 220-340 ms
on JAX. The check is ~0.1% of a step of even a toy model. `fit` on arrays checks them
once, before the first step, and costs nothing per step.
"""

import types

import keras
import numpy as np

from keras_bigmodels.utils import concrete_numpy


class LengthOf:
    """An upper bound equal to the length (last axis) of another input of the same batch.

    Example:
    >>> {"mask_positions": (0, LengthOf("token_ids"))}   # positions inside the sequence
    """

    def __init__(self, input_name):
        self.input_name = input_name

    def __repr__(self):
        return f"LengthOf({self.input_name!r})"


def _normalize(spec):
    """(low, high) or (low, high, ignore) -> (low, high, ignore)."""
    if len(spec) == 2:
        return (spec[0], spec[1], None)
    if len(spec) == 3:
        return tuple(spec)
    raise ValueError(f"A range is (low, high) or (low, high, ignore_value); received {spec!r}.")


def _ignore_class(loss):
    """The label a Keras loss skips (`ignore_class`), or None."""
    if loss is None or isinstance(loss, str) or not hasattr(loss, "get_config"):
        return None
    try:
        return loss.get_config().get("ignore_class")
    except (NotImplementedError, TypeError, AttributeError):
        return None


def _is_tf_dataset(data):
    return any(parent.__name__ == "DatasetV2" and parent.__module__.startswith("tensorflow")
               for parent in type(data).__mro__)


def _is_torch_dataloader(data):
    return any(parent.__name__ == "DataLoader" and parent.__module__.startswith("torch")
               for parent in type(data).__mro__)


class _Entry:
    """One array to check: its role ("input"/"label"), name, range and value index."""

    def __init__(self, role, name, index, low, high, ignore, length_index=None):
        self.role, self.name, self.index = role, name, index
        self.low, self.high, self.ignore = low, high, ignore
        self.length_index = length_index


class InputCheck:
    """The declared integer ranges of a task's inputs and labels, checked on host batches.

    Args:
        input_ranges: {input name: (low, high)} (half-open; `high` may be a `LengthOf`).
        label_ranges: {label name: (low, high) or (low, high, ignore_value)}; the name
            `None` stands for a model with a single output.
        input_names: the model's input names, in order (maps list inputs to names).
        output_names: the model's output names, in order (maps list labels to names).

    Example:
    >>> check = InputCheck({"token_ids": (0, 100)}, {None: (0, 100)}, ["token_ids"], ["logits"])
    >>> check.check_arrays(np.array([[1, 2, 100]]), np.array([[2, 3, 4]]))
    Traceback (most recent call last):
    ValueError: Input `token_ids` holds 100 at index (0, 2), outside its range [0, 100) ...
    """

    def __init__(self, input_ranges, label_ranges, input_names=(), output_names=()):
        self.input_ranges = {k: _normalize(v) for k, v in (input_ranges or {}).items()}
        self.label_ranges = {k: _normalize(v) for k, v in (label_ranges or {}).items()}
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        # The first bad value found: data pipelines (tf.data, a generator feeding
        # TensorFlow) wrap the error in their own; `call` re-raises this one instead.
        self.error = None

    @classmethod
    def of(cls, task):
        """The check a task declares, or None when it declares no ranges."""
        input_ranges = dict(task.input_ranges() or {})
        labels = task.label_range()
        if labels is None:
            label_ranges = {}
        elif isinstance(labels, dict):
            label_ranges = dict(labels)
        else:
            label_ranges = {None: labels}
        if not input_ranges and not label_ranges:
            return None
        output_names = list(getattr(task, "output_names", None) or [])
        loss = getattr(task, "loss", None)
        for name, spec in list(label_ranges.items()):
            spec = _normalize(spec)
            if spec[2] is None:
                if isinstance(loss, dict):
                    ignore = _ignore_class(loss.get(name))
                elif isinstance(loss, (list, tuple)) and name in output_names:
                    ignore = _ignore_class(loss[output_names.index(name)])
                else:
                    ignore = _ignore_class(loss)
                spec = spec[:2] + (ignore,)
            label_ranges[name] = spec
        input_names = [getattr(t, "name", None) for t in (getattr(task, "inputs", None) or [])]
        return cls(input_ranges, label_ranges, input_names, output_names)

    # Naming the arrays of a batch ------------------------------------------------------
    def _named(self, data, ranges, names):
        if data is None or not ranges:
            return {}
        if isinstance(data, dict):
            return {k: data[k] for k in ranges if k in data}
        if isinstance(data, (list, tuple)) and len(names) > 1:
            if len(data) == len(names):
                return {n: v for n, v in zip(names, data) if n in ranges}
            return {}
        if isinstance(data, (list, tuple)) and len(data) == 1 and hasattr(data[0], "shape"):
            data = data[0]
        if len(ranges) == 1:
            return {next(iter(ranges)): data}
        return {}

    def plan(self, x, y=None):
        """(entries, values): the arrays of a batch to check, and how."""
        inputs = self._named(x, self.input_ranges, self.input_names)
        labels = self._named(y, self.label_ranges, self.output_names)
        entries, values = [], []
        for role, named, ranges in (("input", inputs, self.input_ranges),
                                    ("label", labels, self.label_ranges)):
            for name, value in named.items():
                low, high, ignore = ranges[name]
                length_index = None
                if isinstance(high, LengthOf):
                    if high.input_name not in inputs:
                        continue
                    length_index = len(values)
                    values.append(inputs[high.input_name])
                entries.append(_Entry(role, name, len(values), low, high, ignore, length_index))
                values.append(value)
        return entries, values

    def run(self, entries, arrays):
        """Check numpy `arrays` (from `plan`'s values); raise the first bad value."""
        for entry in entries:
            values = arrays[entry.index]
            if values is None:
                continue
            high = entry.high
            if entry.length_index is not None:
                reference = arrays[entry.length_index]
                if reference is None or np.ndim(reference) == 0:
                    continue
                high = np.shape(reference)[-1]
            message = _bad_value(values, entry, high)
            if message:
                self.error = ValueError(message)
                raise self.error

    def check_arrays(self, x, y=None):
        """Check a batch (or the whole data) of arrays/tensors now."""
        entries, values = self.plan(x, y)
        self.run(entries, [concrete_numpy(v) for v in values])

    def check_batch(self, batch, labels=True):
        """Check one `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)` batch."""
        x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
        self.check_arrays(x, y if labels else None)
        return batch

    # Data of every kind ----------------------------------------------------------------
    def wrap(self, x, y=None, labels=True):
        """(x, y) checked now (arrays) or wrapped to check each batch (datasets)."""
        if _is_tf_dataset(x):
            from keras_bigmodels import backend

            def prepare(element):
                x_part, y_part, _ = keras.utils.unpack_x_y_sample_weight(element)
                entries, values = self.plan(x_part, y_part if labels else None)
                return values, lambda arrays: self.run(entries, list(arrays))

            return backend.checked_tf_dataset(x, prepare), y
        if isinstance(x, keras.utils.PyDataset):
            return _CheckedPyDataset(x, self, labels), y
        if isinstance(x, types.GeneratorType):
            return (self.check_batch(batch, labels) for batch in x), y
        if _is_torch_dataloader(x):
            from keras_bigmodels import backend

            return backend.checked_torch_dataloader(
                x, lambda batch: self.check_batch(batch, labels)), y
        if _is_data_source(x):
            return x, y  # grain, distributed datasets, ...: unchecked
        self.check_arrays(x, y if labels else None)
        return x, y

    def wrap_validation(self, validation_data):
        if validation_data is None:
            return None
        if isinstance(validation_data, (list, tuple)):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(validation_data)
            x, y = self.wrap(x, y)
            return (x, y) if sample_weight is None else (x, y, sample_weight)
        return self.wrap(validation_data)[0]


def _is_data_source(x):
    # Array-likes are numpy arrays, backend tensors, lists/tuples/dicts of them.
    if x is None or isinstance(x, (np.ndarray, list, tuple, dict, int, float)):
        return False
    return not hasattr(x, "shape")


def _bad_value(values, entry, high):
    """The message for the first value of `values` outside [low, high), or None."""
    values = np.asarray(values)
    if values.size == 0:
        return None
    low, ignore = entry.low, entry.ignore
    what = "Input" if entry.role == "input" else "Label"
    name = entry.name if entry.name is not None else "y"
    if values.dtype.kind == "f":
        integral = np.isfinite(values).all() and (np.floor(values) == values).all()
        if not integral:
            if entry.role == "label":
                return None  # probabilities (one-hot, smoothed): a dense loss's labels
            return (f"{what} `{name}` must hold integer ids in [{low}, {high}); it holds "
                    "non-integer or non-finite values.")
    elif values.dtype.kind not in "iub":
        return None
    lowest, highest = values.min(), values.max()
    if lowest >= low and highest < high:
        return None
    outside = (values < low) | (values >= high)
    if ignore is not None:
        outside &= values != ignore
        if not outside.any():
            return None
    position = tuple(int(i) for i in np.argwhere(outside)[0])
    bad = values[position]
    bad = int(bad) if float(bad).is_integer() else float(bad)
    bound = f"[{low}, {high})"
    if isinstance(entry.high, LengthOf):
        bound += f" (positions inside `{entry.high.input_name}`, of length {high})"
    allowed = f"; the ignore value {ignore} is allowed too" if ignore is not None else ""
    return (f"{what} `{name}` holds {bad} at index {position}, outside its range {bound}"
            f"{allowed}. Fix the data: an out-of-range id or label does not fail inside a "
            "compiled training step, it silently trains on garbage (or NaN).")


class _CheckedPyDataset(keras.utils.PyDataset):
    """A `PyDataset` whose batches are checked as they are produced (in its workers)."""

    def __init__(self, dataset, check, labels=True):
        super().__init__(workers=dataset.workers,
                         use_multiprocessing=dataset.use_multiprocessing,
                         max_queue_size=dataset.max_queue_size)
        self.dataset = dataset
        self.check = check
        self.labels = labels

    def __getitem__(self, index):
        return self.check.check_batch(self.dataset[index], self.labels)

    def __len__(self):
        return len(self.dataset)

    @property
    def num_batches(self):
        return self.dataset.num_batches

    def on_epoch_begin(self):
        self.dataset.on_epoch_begin()

    def on_epoch_end(self):
        self.dataset.on_epoch_end()


# Where the data argument sits in each Keras method, and whether it carries labels.
_METHODS = {
    "fit": ("x", "y", "validation_data", True),
    "evaluate": ("x", "y", None, True),
    "train_on_batch": ("x", "y", None, True),
    "test_on_batch": ("x", "y", None, True),
    "predict": ("x", None, None, False),
    "predict_on_batch": ("x", None, None, False),
}


def checked_call(task, method_name, method, args, kwargs):
    """Run `method(*args, **kwargs)` (a Keras data method of `task`) on checked data.

    Example:
    >>> checked_call(model, "fit", super(Task, model).fit, (x, y), {"epochs": 1})
    """
    check = InputCheck.of(task)
    if check is None:
        return method(*args, **kwargs)
    x_name, y_name, validation_name, labels = _METHODS[method_name]
    args = list(args)
    names = [x_name] + ([y_name] if y_name else [])

    def get(position, name):
        if position < len(args):
            return args[position]
        return kwargs.get(name)

    def put(position, name, value):
        if position < len(args):
            args[position] = value
        elif name in kwargs or value is not None:
            kwargs[name] = value

    x = get(0, x_name)
    y = get(1, y_name) if y_name else None
    x, y = check.wrap(x, y, labels=labels)
    put(0, names[0], x)
    if y_name:
        put(1, y_name, y)
    if validation_name and kwargs.get(validation_name) is not None:
        kwargs[validation_name] = check.wrap_validation(kwargs[validation_name])
    try:
        return method(*args, **kwargs)
    except Exception as error:
        if check.error is None or error is check.error:
            raise
        # Raised inside a data pipeline (tf.data, a generator feeding TensorFlow), which
        # wrapped it in its own error type: the user gets the ValueError itself.
        raise ValueError(str(check.error)) from None
