"""`siamese-tfx describe`: what an exported model is, read from its SavedModel (a Trainer output
or a pushed version): its signatures with their inputs and outputs, the stored match threshold
and any limits stored beside it, the embedding size, the parameter counts of the backbone, the
head and the whole network, and whether both branches use the same variables.

The counts and the sharing check come from the Keras network inside the SavedModel (rebuilt by
`components/trainer/describe.py`'s `load_network`), not from a file written at training time, so
they hold for any copy of the SavedModel, such as the one Pusher writes; `--diagram` draws that
network with Keras's plot_model.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional

from siamese_tfx.components.contract import errors, signatures

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def _is_saved_model(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, name)) for name in SAVED_MODEL_FILES)


def resolve_saved_model(path: str) -> str:
    """The SavedModel folder `path` names: the folder itself, a Trainer model artifact (its
    `Format-Serving/`) or a model folder of numbered versions (the newest). Raises ValueError
    naming `path` when it holds none."""
    from tfx.utils import path_utils

    if not os.path.isdir(path):
        raise errors.UsageError(f"--model {path}: no such folder")
    if _is_saved_model(path):
        return path
    serving = path_utils.serving_model_dir(path)
    if _is_saved_model(serving):
        return serving
    versions = [name for name in os.listdir(path)
                if name.isascii() and name.isdigit() and _is_saved_model(os.path.join(path, name))]
    if versions:
        return os.path.join(path, max(versions, key=int))
    raise errors.UsageError(f"--model {path}: not a SavedModel folder (no {SAVED_MODEL_FILES[0]}), "
                     "Trainer model output (Format-Serving/) or folder of numbered versions")


def _spec(name: str, spec: Any) -> str:
    dims = "?" if spec.shape.rank is None else ", ".join(
        "?" if d is None else str(d) for d in spec.shape.as_list())
    return f"{name}: {spec.dtype.name}[{dims}]"


def signature_lines(loaded: Any) -> list[str]:
    """One line per signature (the serving contract's first): inputs -> outputs."""
    names = [n for n in signatures.CONTRACT if n in loaded.signatures]
    names += sorted(n for n in loaded.signatures if n not in names)
    lines = []
    for name in names:
        function = loaded.signatures[name]
        inputs = function.structured_input_signature[1]
        outputs = function.structured_outputs
        lines.append(f"  {name}({', '.join(_spec(k, inputs[k]) for k in sorted(inputs))}) -> "
                     + ", ".join(_spec(k, outputs[k]) for k in sorted(outputs)))
    return lines


def stored_values(loaded: Any) -> dict[str, float]:
    """The scalar variables the SavedModel keeps as attributes of its root (the threshold, and
    limits such as pixel or batch caps when the exporter stores them), by attribute name."""
    import tensorflow as tf

    values = {}
    for name, value in sorted(vars(loaded).items()):
        if (not name.startswith("_") and isinstance(value, tf.Variable)
                and value.shape.rank == 0):
            values[name] = value.numpy().item()
    return values


def _number(value: float) -> str:
    """An integer limit in full (16777216, not 1.67772e+07); any other value in 6 digits."""
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def embedding_size(loaded: Any) -> Optional[int]:
    """The width of the `embed` signature's output, when the model has it with a static size."""
    if signatures.EMBED not in loaded.signatures:
        return None
    spec = loaded.signatures[signatures.EMBED].structured_outputs.get(signatures.EMBEDDING)
    if spec is None or spec.shape.rank != 2 or spec.shape[-1] is None:
        return None
    return int(spec.shape[-1])


def describe_model(path: str, diagram: str = "") -> tuple[list[str], Optional[str]]:
    """The description of the SavedModel at `path` (see `resolve_saved_model`) as lines, and
    why `diagram` (a PNG path to draw the network to; '' for none) could not be drawn, or
    None."""
    import tensorflow as tf

    from siamese_tfx.components.trainer import describe as network_lib

    saved_model = resolve_saved_model(path)
    loaded = tf.saved_model.load(saved_model)
    lines = [f"SavedModel: {saved_model}", "Signatures:", *signature_lines(loaded)]
    values = stored_values(loaded)
    threshold = values.pop(signatures.THRESHOLD_ATTR, None)
    lines.append("Match threshold: " + ("not stored" if threshold is None else
                                        f"{threshold:.6g} (match: distance <= threshold)"))
    lines.append("Other values stored in the model (pixel and batch limits, when it has them): "
                 + (", ".join(f"{name} = {_number(value)}" for name, value in values.items())
                    or "none"))
    size = embedding_size(loaded)
    lines.append(f"Embedding size: {size if size is not None else 'unknown'}")
    try:
        network = network_lib.load_network(saved_model)
        description = network_lib.describe_network(network)
    except ValueError as error:
        message = f"not available: {error}"
        lines.append(f"Parameter counts: {message}")
        return lines, (f"cannot draw {diagram}: {message}" if diagram else None)
    lines += ["Parameters:", *(f"  {line}" for line in description.table()),
              description.sharing_sentence()]
    if description.members:
        lines.append(f"Ensemble of {len(description.members)} members: " + ", ".join(
            f"{m.name} ({m.counts.total:,})" for m in description.members))
    if not diagram:
        return lines, None
    unavailable = network_lib.diagram_unavailable()
    if unavailable:
        return lines, f"diagram skipped: {unavailable}"
    network_lib.plot(network, diagram)
    lines.append(f"Diagram: {diagram}")
    return lines, None


def _describe_command(args: argparse.Namespace) -> int:
    try:
        lines, problem = describe_model(args.model, args.diagram)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "describe", help="What an exported model is: signatures, threshold, embedding size, "
        "parameter counts and whether its branches share weights.",
        description="Prints an exported model's signatures with their inputs and outputs, the "
        "stored match threshold and limits, the embedding size, the parameter counts of the "
        "backbone, the head and the whole network, and whether both branches use the same "
        "variables (checked on the model's own variables). Exit code 2 when --model holds no "
        "SavedModel, 1 when --diagram could not be drawn.")
    parser.add_argument("--model", required=True,
                        help="Exported SavedModel folder (a Trainer output, a pushed version "
                        "serving/<name>/<version>, or serving/<name> for its newest version).")
    parser.add_argument("--diagram", default="",
                        help="Also draw the network (Keras plot_model, nested backbone, shapes) "
                        "to this PNG file; needs Graphviz's dot (default: no diagram).")
    parser.set_defaults(func=_describe_command)
