"""What the Siamese network is, read from the model itself: parameter counts of the backbone,
the head and the whole network, whether both branches use the same variables, and Keras's
diagrams of it.

The branches are found in the model's functional graph: a layer call that depends on one image
input only belongs to that input's branch, a call that depends on both belongs to the head. The
variables each branch's layers hold are compared (the same variable objects: shared weights; a
pseudo-Siamese network's branches hold distinct ones), so the sharing sentence states what the
model does, not what the config asked for.

`write_description` (the Trainer calls it after training) writes into the model run directory:
- `model_summary.txt`: the counts, the sharing sentence, the embedding size, an ensemble's
  members, and Keras's own summaries of the network and its backbone;
- `model_summary.json`: the same figures for programs (`summary_line` reads it for the run
  summary);
- `model.png` (the network, nested backbone expanded, with shapes) and `backbone.png`, drawn by
  `tf.keras.utils.plot_model`; in an ensemble also `member_<i>/backbone.png`. They need pydot and
  Graphviz's `dot`; without them the diagrams are skipped and the files say why.

`load_network` reads the network back from an exported SavedModel (Trainer or Pusher output) for
`siamese-tfx describe`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any, Optional, Sequence

import tensorflow as tf
from absl import logging

# Registers the project's layers, losses and metrics, so load_model rebuilds the network (and
# the metrics it was compiled with) without custom objects.
from siamese_tfx.components.trainer import heads, losses  # noqa: F401
from siamese_tfx.components.trainer.layers import EnsembleEmbedding

keras = tf.keras

SUMMARY_TXT = "model_summary.txt"
SUMMARY_JSON = "model_summary.json"
MODEL_PNG = "model.png"
BACKBONE_PNG = "backbone.png"
KERAS_METADATA = "keras_metadata.pb"  # what Keras adds to a SavedModel it saves
_SUMMARY_WIDTH = 110  # characters per line of Keras's summaries in model_summary.txt


@dataclasses.dataclass(frozen=True)
class Counts:
    """Parameters (scalar values of variables) of a part of the network."""

    trainable: int
    non_trainable: int

    @property
    def total(self) -> int:
        return self.trainable + self.non_trainable


@dataclasses.dataclass(frozen=True)
class Branch:
    """One image input's path to the head: its input, the layers called on it and how many
    variables those hold."""

    input: str
    layers: tuple[str, ...]
    counts: Counts
    variables: int


@dataclasses.dataclass(frozen=True)
class Member:
    """An ensemble member's backbone inside the served backbone."""

    name: str
    counts: Counts


@dataclasses.dataclass(frozen=True)
class NetworkDescription:
    """What `describe_network` found in a Siamese network."""

    name: str
    branches: tuple[Branch, ...]
    shared_variables: int  # variables every branch uses
    head: str  # the head's layers
    head_counts: Counts
    whole: Counts
    embedding_size: int
    members: tuple[Member, ...] = ()
    members_distinct: bool = True  # no two members hold the same variable
    # {"written": [the diagrams, relative to the directory], "skipped": why they were not}
    diagram: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def shares_weights(self) -> bool:
        """Whether every branch uses exactly the same variables (and there are some)."""
        return all(b.variables == self.shared_variables for b in self.branches) and bool(
            self.shared_variables)

    @property
    def backbone(self) -> Counts:
        """The parameters of one branch (the first): the backbone."""
        return self.branches[0].counts

    def sharing_sentence(self) -> str:
        """One plain sentence: do both branches use the same variables?"""
        names = [", ".join(b.layers) or "no layers" for b in self.branches]
        if self.shares_weights:
            return (f"Both branches use the same {self.shared_variables} variables ({names[0]}): "
                    "the weights are shared, so the network holds the backbone's "
                    f"{self.backbone.total:,} parameters once.")
        if not any(b.variables for b in self.branches):
            return "The branches hold no variables: there are no weights to share."
        per_branch = ", ".join(f"{n}: {b.variables}" for n, b in zip(names, self.branches))
        if self.shared_variables == 0:
            return (f"The branches use different variables ({per_branch}; none in common): the "
                    "weights are NOT shared (a pseudo-Siamese network), so the network holds "
                    "backbone parameters once per branch.")
        return (f"The branches have only {self.shared_variables} of their variables in common "
                f"({per_branch}): the weights are only partly shared.")

    def rows(self) -> list[tuple[str, Counts]]:
        """(what, counts): the backbone (or each branch, when they differ), head, whole."""
        if self.shares_weights:
            parts = [(f"backbone {', '.join(self.branches[0].layers)} (both branches)",
                      self.backbone)]
        else:
            parts = [(f"{b.input} branch {', '.join(b.layers)}", b.counts)
                     for b in self.branches]
        return parts + [(f"head {self.head or '(none)'}", self.head_counts),
                        (f"whole network {self.name}", self.whole)]

    def table(self) -> list[str]:
        """The parameter counts as aligned text lines."""
        rows = self.rows()
        width = max(len(what) for what, _ in rows)
        lines = [f"{'parameters':<{width}}  {'trainable':>12}  {'non-trainable':>13}  "
                 f"{'total':>12}"]
        for what, counts in rows:
            lines.append(f"{what:<{width}}  {counts.trainable:>12,}  {counts.non_trainable:>13,}"
                         f"  {counts.total:>12,}")
        return lines

    def diagram_note(self) -> str:
        """Which diagrams were written, or why they were skipped ('' when not attempted)."""
        if self.diagram.get("skipped"):
            return f"Diagram skipped: {self.diagram['skipped']}"
        if self.diagram.get("written"):
            return "Diagrams: " + ", ".join(self.diagram["written"])
        return ""

    def summary_line(self) -> str:
        """The counts and the sharing sentence in one line (the run summary prints it); it
        says when the diagram was skipped."""
        backbone = (f"backbone {self.backbone.total:,}" if self.shares_weights else
                    "branches " + " + ".join(f"{b.counts.total:,}" for b in self.branches))
        line = (f"Model parameters: {backbone}, head {self.head_counts.total:,}, whole network "
                f"{self.whole.total:,} ({self.whole.trainable:,} trainable). "
                f"{self.sharing_sentence()}")
        if self.members:
            line += f" An ensemble of {len(self.members)} members."
        if self.diagram.get("skipped"):
            line += f" {self.diagram_note()}."
        return line

    def text(self) -> list[str]:
        """The description as text lines (model_summary.txt without Keras's summaries)."""
        lines = [f"Siamese network {self.name!r}", *self.table(), "", self.sharing_sentence(),
                 f"Embedding size: {self.embedding_size}"]
        if self.members:
            lines.append(f"Ensemble: {len(self.members)} members' backbones, each "
                         + ("holding its own variables" if self.members_distinct
                            else "NOT all holding their own variables") + ":")
            lines.extend(f"  {m.name}: {m.counts.total:,} parameters ({m.counts.trainable:,} "
                         "trainable)" for m in self.members)
        note = self.diagram_note()
        return lines + ([note] if note else [])

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(shares_weights=self.shares_weights, sharing=self.sharing_sentence())
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NetworkDescription":
        def counts(value: dict[str, int]) -> Counts:
            return Counts(int(value["trainable"]), int(value["non_trainable"]))

        return cls(
            name=data["name"],
            branches=tuple(Branch(b["input"], tuple(b["layers"]), counts(b["counts"]),
                                  int(b["variables"])) for b in data["branches"]),
            shared_variables=int(data["shared_variables"]), head=data["head"],
            head_counts=counts(data["head_counts"]), whole=counts(data["whole"]),
            embedding_size=int(data["embedding_size"]),
            members=tuple(Member(m["name"], counts(m["counts"])) for m in data["members"]),
            members_distinct=bool(data["members_distinct"]), diagram=dict(data["diagram"]))


def graph_model(model: keras.Model) -> keras.Model:
    """The functional graph of `model` alone, as a new model over the same layers: without what
    the exporter attaches to it (the Transform layer, the threshold variable), which Keras would
    otherwise count and draw."""
    return keras.Model(model.inputs, model.outputs, name=model.name)


def _variables(layers: Sequence[keras.layers.Layer]) -> dict[Any, tf.Variable]:
    """The distinct variables the layers hold, keyed by variable identity."""
    return {v.ref(): v for layer in layers for v in layer.weights}


def _counts(variables: dict[Any, tf.Variable]) -> Counts:
    sizes = {True: 0, False: 0}
    for v in variables.values():
        sizes[bool(v.trainable)] += int(v.shape.num_elements() or 0)
    return Counts(sizes[True], sizes[False])


def _calls(model: keras.Model) -> list[tuple[keras.layers.Layer, frozenset[str]]]:
    """Every layer call in `model`'s graph (walked back from its outputs, Keras 2's functional
    nodes) with the names of the model inputs it depends on."""
    found: dict[int, tuple[keras.layers.Layer, frozenset[str]]] = {}

    def inputs_of(node: Any) -> frozenset[str]:
        if id(node) in found:
            return found[id(node)][1]
        if node.is_input:
            result = frozenset([node.layer.name])
        else:
            result = frozenset().union(*(inputs_of(parent) for parent in node.parent_nodes))
        found[id(node)] = (node.layer, result)
        return result

    for output in model.outputs:
        history = output._keras_history
        inputs_of(history.layer._inbound_nodes[history.node_index])
    return [(layer, deps) for layer, deps in found.values()
            if not isinstance(layer, keras.layers.InputLayer)]


def _ensemble_members(backbone: keras.layers.Layer) -> list[keras.Model]:
    """The member backbones of an ensemble's backbone (the models joined by its
    EnsembleEmbedding layer), or [] when it is not an ensemble."""
    if not isinstance(backbone, keras.Model):
        return []
    if not any(isinstance(layer, EnsembleEmbedding) for layer in backbone.layers):
        return []
    return [layer for layer in backbone.layers if isinstance(layer, keras.Model)]


def describe_network(model: keras.Model) -> NetworkDescription:
    """Counts the backbone's, the head's and the whole network's parameters and checks from the
    variables whether the branches share them. `model`: a Siamese network of two image inputs
    (built, or loaded by `load_network`)."""
    model = graph_model(model)
    if len(model.inputs) != 2:
        raise ValueError(f"model {model.name!r} has {len(model.inputs)} inputs; a Siamese "
                         "network has two (one per image)")
    input_names = [t._keras_history.layer.name for t in model.inputs]
    calls = _calls(model)
    branch_layers = {name: [] for name in input_names}
    head_layers: list[keras.layers.Layer] = []
    for layer, deps in calls:
        target = branch_layers[next(iter(deps))] if len(deps) == 1 else head_layers
        if all(layer is not other for other in target):
            target.append(layer)
    branch_variables = [_variables(branch_layers[name]) for name in input_names]
    shared = set(branch_variables[0]).intersection(*branch_variables[1:])
    in_branches = {ref for variables in branch_variables for ref in variables}
    head_variables = {ref: v for ref, v in _variables(head_layers).items()
                      if ref not in in_branches}
    whole = _variables([layer for layer, _ in calls])
    backbone_layers = branch_layers[input_names[0]]
    members = _ensemble_members(backbone_layers[0]) if len(backbone_layers) == 1 else []
    member_variables = [_variables([m]) for m in members]
    distinct = sum(len(v) for v in member_variables) == len(
        {ref for variables in member_variables for ref in variables})
    return NetworkDescription(
        name=model.name,
        branches=tuple(Branch(name, tuple(layer.name for layer in branch_layers[name]),
                              _counts(variables), len(variables))
                       for name, variables in zip(input_names, branch_variables)),
        shared_variables=len(shared),
        head=", ".join(layer.name for layer in head_layers),
        head_counts=_counts(head_variables),
        whole=_counts(whole),
        embedding_size=_embedding_size(backbone_layers),
        members=tuple(Member(m.name, _counts(v)) for m, v in zip(members, member_variables)),
        members_distinct=distinct,
    )


def _embedding_size(backbone_layers: Sequence[keras.layers.Layer]) -> int:
    """The last dimension of the branch's output (0 when it has no layers or no static size)."""
    if not backbone_layers:
        return 0
    shape = backbone_layers[-1].output_shape
    if isinstance(shape, list):  # a layer called several times: one shape per call
        shape = shape[0]
    return int(shape[-1] or 0)


def diagram_unavailable() -> Optional[str]:
    """Why `plot_model` cannot draw here (pydot or Graphviz's `dot` missing), or None."""
    try:
        import pydot  # noqa: F401
    except ImportError:
        return "pydot is not installed (pip install pydot)"
    if shutil.which("dot") is None:
        return ("Graphviz's dot is not on PATH (install Graphviz: apt-get install graphviz); "
                "PATH=" + os.environ.get("PATH", ""))
    return None


def plot(model: keras.Model, path: str) -> None:
    """Draws `model` with Keras's plot_model (nested models expanded, with shapes and trainable
    flags) to `path` (local or a tf.io.gfile URL); raises when it cannot be drawn."""
    with tempfile.TemporaryDirectory(prefix="siamese-tfx-plot-") as scratch:
        local = os.path.join(scratch, os.path.basename(path))
        keras.utils.plot_model(model, to_file=local, show_shapes=True, expand_nested=True,
                               show_layer_names=True, show_trainable=True, dpi=96)
        tf.io.gfile.makedirs(os.path.dirname(path) or ".")
        tf.io.gfile.copy(local, path, overwrite=True)


def _try_plot(model: keras.Model, path: str) -> Optional[str]:
    """`plot`, returning why it failed instead of raising (a diagram never fails training)."""
    try:
        plot(model, path)
    except (ImportError, OSError, AssertionError, ValueError, tf.errors.OpError) as error:
        return f"plot_model failed for {path}: {type(error).__name__}: {error}"
    return None


def _keras_summary(model: keras.Model, expand_nested: bool) -> list[str]:
    lines: list[str] = []
    model.summary(line_length=_SUMMARY_WIDTH, expand_nested=expand_nested, show_trainable=True,
                  print_fn=lambda line, *args, **kwargs: lines.append(line))
    return lines


def write_description(model: keras.Model, directory: str,
                      member_dirs: Sequence[str] = ()) -> NetworkDescription:
    """Describes the Siamese network `model` (`describe_network`) into `directory`:
    model_summary.txt, model_summary.json, and the diagrams model.png and backbone.png (an
    ensemble's members' backbone.png into `member_dirs`, in member order) when pydot and
    Graphviz are available; otherwise the files and the log say why they were skipped."""
    graph = graph_model(model)
    description = describe_network(graph)
    backbones = [graph.get_layer(name) for name in description.branches[0].layers]
    members = [graph.get_layer(description.branches[0].layers[0]).get_layer(m.name)
               for m in description.members]
    targets = [(graph, os.path.join(directory, MODEL_PNG))]
    if len(backbones) == 1 and isinstance(backbones[0], keras.Model):
        targets.append((backbones[0], os.path.join(directory, BACKBONE_PNG)))
    if members and len(member_dirs) == len(members):
        targets += [(m, os.path.join(d, BACKBONE_PNG)) for m, d in zip(members, member_dirs)]
    elif members:
        logging.warning("%d ensemble members but %d member directories: their backbone "
                        "diagrams are not drawn", len(members), len(member_dirs))
    skipped = diagram_unavailable()
    written = []
    for target, path in targets if skipped is None else []:
        skipped = _try_plot(target, path)
        if skipped:
            break
        written.append(os.path.relpath(path, directory))
    diagram = {"written": written, "skipped": skipped or ""}
    description = dataclasses.replace(description, diagram=diagram)

    tf.io.gfile.makedirs(directory)
    sections = [*description.text(), "", f"Keras summary of {graph.name!r}:",
                *_keras_summary(graph, expand_nested=False)]
    for backbone in backbones:
        if isinstance(backbone, keras.Model):
            sections += ["", f"Keras summary of the backbone {backbone.name!r}:",
                         *_keras_summary(backbone, expand_nested=True)]
    with tf.io.gfile.GFile(os.path.join(directory, SUMMARY_TXT), "w") as f:
        f.write("\n".join(sections) + "\n")
    with tf.io.gfile.GFile(os.path.join(directory, SUMMARY_JSON), "w") as f:
        f.write(json.dumps(description.to_dict(), indent=1))
    logging.info("%s", description.summary_line())
    if skipped:
        logging.warning("Model diagram skipped: %s", skipped)
    return description


def read_description(directory: str) -> Optional[NetworkDescription]:
    """The description `write_description` left in `directory`, or None when there is none."""
    path = os.path.join(directory, SUMMARY_JSON)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return NetworkDescription.from_dict(json.load(f))


def summary_line(directory: str) -> Optional[str]:
    """The one-line description (counts, sharing sentence, a skipped diagram) of the Trainer
    output in `directory` (its model run directory), or None when it holds none."""
    description = read_description(directory)
    return description.summary_line() if description else None


def load_network(saved_model_dir: str) -> keras.Model:
    """The Siamese network of an exported SavedModel (the Trainer's or a pushed version; the
    Keras model the exporter saved, rebuilt with the project's registered layers), reduced to
    its functional graph. Raises ValueError when the folder holds no Keras model."""
    if not tf.io.gfile.exists(os.path.join(saved_model_dir, KERAS_METADATA)):
        raise ValueError(f"{saved_model_dir}: no Keras model in this SavedModel (no "
                         f"{KERAS_METADATA}: it was not saved by Keras)")
    try:
        model = keras.models.load_model(saved_model_dir, compile=False)
    except (OSError, ValueError, ImportError, TypeError, KeyError) as error:
        raise ValueError(f"{saved_model_dir}: cannot rebuild its Keras model "
                         f"({type(error).__name__}: {error})") from error
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise ValueError(f"{saved_model_dir}: its SavedModel holds no functional Keras model")
    return graph_model(model)
