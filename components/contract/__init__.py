"""The contract every layer of siamese-tfx shares, and the only package they all import.

- `features`: the tf.Example feature keys PairExampleGen writes and everything downstream reads,
  and the curated TFDV schema file;
- `signatures`: the exported SavedModel's signatures, their inputs and outputs, and where TF
  Serving finds the warmup requests;
- `config`: the typed config sections each component receives, and the dataclass machinery they
  are built with;
- `options`: the one generator of command-line options from those dataclasses.

It imports nothing of the project (an import-linter contract in pyproject.toml checks it), so
code running in Beam workers, Trainer pods and model servers needs only this and its own module.
"""
