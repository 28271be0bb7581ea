"""The pipeline's subcommands: `run` (any data) and `demo` (the embedded digits dataset, end to
end). Their options are generated from `pipeline.config`, the one place settings are defined."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any

from siamese_tfx.pipeline.config import PipelineConfig

_SECTIONS = ("data", "image", "model", "train", "eval", "validation", "infra", "serving_limits")
_PATH_FIELDS = ("pipeline_root", "serving_dir")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _section_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per setting of PipelineConfig, with its help text and default."""
    defaults = PipelineConfig()
    groups = [("pipeline", PipelineConfig, defaults)] + [
        (s, type(getattr(defaults, s)), getattr(defaults, s)) for s in _SECTIONS
    ]
    for title, cls, instance in groups:
        group = parser.add_argument_group(f"{title} settings")
        for f in _section_fields(cls):
            default = getattr(instance, f.name)
            kwargs: dict[str, Any] = {"dest": f"{title}.{f.name}", "default": None}
            help_text = f.metadata["help"]
            if isinstance(default, bool):
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["type"] = type(default)
                kwargs["metavar"] = f.name.upper()
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
            if default != "":
                help_text += f" (default: {default})"
            group.add_argument(_flag(f.name), help=help_text, **kwargs)


def config_from_args(args: argparse.Namespace, base: PipelineConfig) -> PipelineConfig:
    """`base` with every option given on the command line applied."""
    values = base.to_dict()
    for key, value in vars(args).items():
        if value is None or "." not in key:
            continue
        section, name = key.split(".", 1)
        if section == "pipeline":
            values[name] = value
        elif section in _SECTIONS:
            values[section][name] = value
    return PipelineConfig.from_dict(values)


def _add_run_location_options(parser: argparse.ArgumentParser, default_output: str) -> None:
    parser.add_argument(
        "--output-dir", default=default_output,
        help="Folder for this pipeline's outputs: pipeline root, ML Metadata (SQLite) and "
        "serving directory, unless given separately (default: %(default)s).",
    )
    parser.add_argument("--metadata-path", default=None,
                        help="ML Metadata SQLite file (default: <output-dir>/metadata.sqlite).")
    parser.add_argument("--config", default=None,
                        help="JSON file of PipelineConfig settings; options override it.")
    parser.add_argument("--summary-json", default=None,
                        help="Also write the run summary as JSON to this file.")


def _resolve(args: argparse.Namespace, base: PipelineConfig) -> tuple[PipelineConfig, str]:
    if args.config:
        with open(args.config) as f:
            base = PipelineConfig.from_dict(json.load(f))
    output = os.path.abspath(args.output_dir)
    base = dataclasses.replace(
        base,
        pipeline_root=base.pipeline_root or os.path.join(output, "pipeline"),
        serving_dir=base.serving_dir or os.path.join(output, "serving"),
    )
    config = config_from_args(args, base)
    return config, args.metadata_path or os.path.join(output, "metadata.sqlite")


def _run_pipeline(config: PipelineConfig, metadata_path: str, summary_json: str | None):
    import time

    from siamese_tfx.pipeline import local_runner

    log_path = os.path.join(os.path.dirname(metadata_path), "logs",
                            time.strftime("run-%Y%m%d-%H%M%S.log"))
    print(f"Pipeline {config.pipeline_name}: root {config.pipeline_root}\n"
          f"TFX log: {log_path}", flush=True)
    summary = local_runner.run(config, metadata_path, log_path=log_path)
    print(summary.format(), flush=True)
    if summary_json:
        with open(summary_json, "w") as f:
            f.write(summary.to_json())
    return summary


def run_command(args: argparse.Namespace) -> int:
    config, metadata_path = _resolve(args, PipelineConfig())
    if not config.data.image_root:
        print("error: --image-root is required (or set data.image_root in --config)",
              file=sys.stderr)
        return 2
    summary = _run_pipeline(config, metadata_path, args.summary_json)
    return 0 if summary.pushed_path else 3


def demo_command(args: argparse.Namespace) -> int:
    from siamese_tfx.pipeline import demo

    config, metadata_path = _resolve(args, demo.demo_config())
    config = demo.with_digits(config, os.path.abspath(args.output_dir))
    summary = _run_pipeline(config, metadata_path, args.summary_json)
    if not summary.pushed_path:
        print("The demo model was not pushed; see the summary above.", file=sys.stderr)
        return 3
    return demo.query_pushed_model(config, summary.pushed_path, args.pairs)


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run", help="Run the whole pipeline locally (LocalDagRunner, Beam DirectRunner).",
        description="Ingest, validate, transform, train, evaluate and push, locally. Exits 0 "
        "when a model was pushed, 3 when the run finished without pushing.",
    )
    _add_run_location_options(run, "runs/siamese")
    add_config_options(run)
    run.set_defaults(func=run_command)

    demo_parser = subparsers.add_parser(
        "demo", help="End to end on scikit-learn's digits: train, validate, bless, push, "
        "serve, query.",
        description="Writes scikit-learn's handwritten digits as class folders, runs the whole "
        "pipeline on them (held-out digits form the eval split), then serves the pushed model "
        "over gRPC and compares image pairs of digits the model never saw.",
    )
    _add_run_location_options(demo_parser, "runs/demo")
    demo_parser.add_argument("--pairs", type=int, default=4,
                             help="Same-digit and different-digit pairs to query (each).")
    add_config_options(demo_parser)
    demo_parser.set_defaults(func=demo_command)
