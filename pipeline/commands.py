"""The pipeline's subcommands: `run` (any data) and `demo` (the embedded digits dataset, end to
end). Their options are generated from `PipelineConfig` (`contract.options`), the one place
settings are defined."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from siamese_tfx.components.contract import errors, options
from siamese_tfx.pipeline.config import LocalBeamConfig, PipelineConfig

_PREFIX = "pipeline"  # dest prefix of PipelineConfig's own fields; sections use their names
_BEAM = "beam"  # dest prefix of LocalBeamConfig's fields


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """`--config FILE` and one option per setting of PipelineConfig, with its help and default."""
    options.add_config_options(parser, PipelineConfig, _PREFIX, "--config")


def config_from_args(args: argparse.Namespace, base: PipelineConfig | None = None
                     ) -> PipelineConfig:
    """`base` (default: the defaults), or the `--config` file instead when given, with every
    option given applied."""
    return options.config_from_args(args, PipelineConfig, _PREFIX, base)


def _add_run_location_options(parser: argparse.ArgumentParser, default_output: str) -> None:
    parser.add_argument(
        "--output-dir", default=default_output,
        help="Folder for this pipeline's outputs: pipeline root, ML Metadata (SQLite) and "
        "serving directory, unless given separately (default: %(default)s).",
    )
    parser.add_argument("--metadata-path", default=None,
                        help="ML Metadata SQLite file (default: <output-dir>/metadata.sqlite).")
    parser.add_argument("--summary-json", default=None,
                        help="Also write the run summary as JSON to this file.")


def _absolute(path: str) -> str:
    """A local path made absolute (Beam workers run in another working directory); URIs
    (gs://, s3://, ...) and empty settings as given."""
    return path if not path or "://" in path else os.path.abspath(path)


def _resolve(args: argparse.Namespace, base: PipelineConfig) -> tuple[PipelineConfig, str]:
    config = config_from_args(args, base)
    output = os.path.abspath(args.output_dir)
    config = dataclasses.replace(
        config,
        pipeline_root=_absolute(config.pipeline_root) or os.path.join(output, "pipeline"),
        serving_dir=_absolute(config.serving_dir) or os.path.join(output, "serving"),
        # The manifest's path is relative to the image root (as are its rows).
        data=dataclasses.replace(config.data, image_root=_absolute(config.data.image_root)),
        validation=dataclasses.replace(
            config.validation, schema_path=_absolute(config.validation.schema_path)),
        gallery=dataclasses.replace(
            config.gallery, gallery_path=_absolute(config.gallery.gallery_path)),
    )
    return config, args.metadata_path or os.path.join(output, "metadata.sqlite")


def _run_pipeline(config: PipelineConfig, metadata_path: str, summary_json: str | None,
                  log_path: str, beam: LocalBeamConfig = LocalBeamConfig()):
    from siamese_tfx.pipeline import local_runner

    print(f"Pipeline {config.pipeline_name}: root {config.pipeline_root}\n"
          f"Log (TFX, Beam, TensorFlow): {log_path}", flush=True)
    if beam.is_portable:
        print(f"Beam: {beam.beam_runner} at {beam.beam_job_endpoint or '(its own job server)'}",
              flush=True)
    summary = local_runner.run(config, metadata_path,
                               beam_pipeline_args=local_runner.beam_pipeline_args(beam),
                               log_path=log_path)
    print(summary.format(), flush=True)
    if summary_json:
        with open(summary_json, "w") as f:
            f.write(summary.to_json())
    return summary


def _check_inputs(config: PipelineConfig) -> None:
    """Missing inputs fail here, with the option to fix, before anything starts."""
    data = config.data
    if not data.image_root:
        raise errors.UsageError("--image-root is required (or set data.image_root in --config)")
    if "://" not in data.image_root and not os.path.isdir(data.image_root):
        raise errors.UsageError(f"--image-root {data.image_root!r}: no such folder")
    manifest = os.path.join(data.image_root, data.manifest) if data.manifest else ""
    if manifest and "://" not in manifest and not os.path.isfile(manifest):
        raise errors.UsageError(f"--manifest {data.manifest!r}: no such file under the image "
                                f"root ({manifest})")
    gallery = config.gallery.gallery_path
    if gallery and "://" not in gallery and not os.path.exists(gallery):
        raise errors.UsageError(f"--gallery {gallery!r}: no such folder or manifest file")


def run_command(args: argparse.Namespace) -> int:
    config, metadata_path = _resolve(args, PipelineConfig())
    _check_inputs(config)
    from siamese_tfx.pipeline import local_runner

    try:
        beam = options.apply_args(LocalBeamConfig(), args, _BEAM)
    except ValueError as e:
        raise errors.UsageError(str(e)) from e
    local_runner.check_job_endpoint(beam)
    summary = _run_pipeline(config, metadata_path, args.summary_json, args.log_file, beam)
    return int(errors.ExitCode.OK if summary.pushed_path else errors.ExitCode.NOT_PUSHED)


def demo_command(args: argparse.Namespace) -> int:
    from siamese_tfx.pipeline import demo

    config, metadata_path = _resolve(args, demo.demo_config())
    config = demo.with_digits(config, os.path.abspath(args.output_dir))
    summary = _run_pipeline(config, metadata_path, args.summary_json, args.log_file)
    if not summary.pushed_path:
        print("The demo model was not pushed; see the summary above.", file=sys.stderr)
        return int(errors.ExitCode.NOT_PUSHED)
    return demo.query_pushed_model(config, summary.pushed_path, args.pairs)


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run", help="Run the whole pipeline locally (LocalDagRunner; Beam's DirectRunner, or a "
        "portable runner with --beam-runner).",
        description="Ingest, validate, transform, train, evaluate and push, locally. Exits 0 "
        "when a model was pushed, 3 when the run finished without pushing (the exit codes "
        "below).",
    )
    _add_run_location_options(run, "runs/siamese")
    add_config_options(run)
    options.add_dataclass_options(run, LocalBeamConfig, _BEAM,
                                  "Beam runner (default: DirectRunner in this process)")
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
