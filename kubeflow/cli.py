"""`siamese-tfx kubeflow compile|schedule`: the pipeline on Kubeflow Pipelines.

Both commands take the pipeline's settings exactly like `siamese-tfx run` (one option per
`PipelineConfig` field, or `--config file.json`) plus the runner's (`KubeflowConfig`: image,
resources, Beam runner; or `--kubeflow-config file.json`).
"""

from __future__ import annotations

import argparse
import json
import sys

from siamese_tfx.components.contract import options
from siamese_tfx.kubeflow.config import KubeflowConfig
from siamese_tfx.pipeline.config import PipelineConfig

_KF = "kubeflow"  # dest prefix of KubeflowConfig's options
_PIPELINE = "pipeline"  # and of PipelineConfig's own fields (its sections use their names)
DEFAULT_OUTPUT = "build/kubeflow/pipeline.yaml"


def add_kubeflow_options(parser: argparse.ArgumentParser) -> None:
    """`--kubeflow-config FILE` and one option per KubeflowConfig field."""
    options.add_config_options(parser, KubeflowConfig, _KF, "--kubeflow-config",
                               "kubeflow runner settings")


def kubeflow_config_from_args(args: argparse.Namespace) -> KubeflowConfig:
    """KubeflowConfig from --kubeflow-config (if given) with the options on top."""
    return options.config_from_args(args, KubeflowConfig, _KF)


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """PipelineConfig from --config (if given) with the options on top."""
    return options.config_from_args(args, PipelineConfig, _PIPELINE)


def _compile(args: argparse.Namespace) -> tuple[PipelineConfig, str]:
    from siamese_tfx.kubeflow import runner

    config = config_from_args(args)
    kf = kubeflow_config_from_args(args)
    path = runner.compile_pipeline(config, kf, args.output)
    return config, path


def compile_command(args: argparse.Namespace) -> int:
    try:
        config, path = _compile(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Compiled {config.pipeline_name} for Kubeflow Pipelines: {path}")
    return 0


def make_client(args: argparse.Namespace):
    """The real KFP client for --host (kept apart so nothing imports kfp.Client in dry runs)."""
    import kfp

    return kfp.Client(host=args.host, namespace=args.namespace)


def schedule_command(args: argparse.Namespace) -> int:
    from siamese_tfx.kubeflow import schedule as schedule_lib

    if not args.dry_run and not args.host:
        print("error: --host is required (or --dry-run)", file=sys.stderr)
        return 2
    try:
        if args.package:
            config, path = config_from_args(args), args.package
        else:
            config, path = _compile(args)
        request = schedule_lib.ScheduleRequest(
            package_path=path, pipeline_name=config.pipeline_name, cron=args.cron,
            experiment=args.experiment, recurring_run_name=args.recurring_run_name,
            pipeline_root=config.pipeline_root, description=args.description,
            namespace=args.namespace, service_account=args.service_account,
            max_concurrency=args.max_concurrency,
        )
        schedule_lib.kfp_cron(args.cron)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    client = schedule_lib.RecordingClient() if args.dry_run else make_client(args)
    result = schedule_lib.schedule(client, request)
    if args.dry_run:
        print(f"Dry run: the KFP API calls `schedule` would make on {args.host or '<host>'} "
              "(assuming the server holds nothing yet), one JSON object per line:",
              file=sys.stderr)
        for method, kwargs in client.calls:
            print(json.dumps({"call": method, "kwargs": kwargs}, sort_keys=True))
        return 0
    print(f"Pipeline {config.pipeline_name} ({result.pipeline_id}), version "
          f"{result.version_name} ({result.version_id}); recurring run "
          f"{request.run_name()} ({result.recurring_run_id}) on cron "
          f"'{schedule_lib.kfp_cron(args.cron)}' in experiment {request.experiment}"
          + (f"; replaced {', '.join(result.replaced_recurring_run_ids)}"
             if result.replaced_recurring_run_ids else ""))
    return 0


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help="Where to write the compiled YAML PipelineSpec "
                        "(default: %(default)s).")
    add_kubeflow_options(parser)
    options.add_config_options(parser, PipelineConfig, _PIPELINE, "--config")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the `kubeflow` command group."""
    group = subparsers.add_parser(
        "kubeflow", help="Compile the pipeline for Kubeflow Pipelines and schedule it.",
        description="The same pipeline as `run`, compiled with TFX's KubeflowV2DagRunner to a "
        "KFP v2 YAML PipelineSpec, and scheduled as a recurring run through the KFP API.",
    )
    commands = group.add_subparsers(dest="kubeflow_command", required=True, metavar="COMMAND")

    compile_parser = commands.add_parser(
        "compile", help="Write the YAML PipelineSpec (no cluster needed).",
        description="Compiles the pipeline with the pipeline image, per-component resources "
        "(GPUs for Trainer) and Beam arguments for a distributed runner. --pipeline-root, "
        "--serving-dir and --image-root must be on storage every pod sees.",
    )
    _add_common(compile_parser)
    compile_parser.set_defaults(func=compile_command)

    schedule_parser = commands.add_parser(
        "schedule", help="Upload the pipeline (a new version if it exists) and create or "
        "replace its recurring run.",
        description="Compiles (unless --package), uploads the spec with kfp.Client, and points "
        "one recurring run at the uploaded version. --dry-run prints the KFP API calls "
        "instead of sending them.",
    )
    schedule_parser.add_argument("--host", default=None,
                                 help="KFP API endpoint, e.g. http://ml-pipeline-ui.kubeflow "
                                 "(required unless --dry-run).")
    schedule_parser.add_argument("--namespace", default=None,
                                 help="Kubeflow profile namespace (multi-user installs).")
    schedule_parser.add_argument("--cron", required=True,
                                 help="When to run: standard 5-field cron, e.g. '0 3 * * *' "
                                 "(03:00 daily, the cluster's time zone), or KFP's 6-field "
                                 "form with seconds first.")
    schedule_parser.add_argument("--experiment", default="siamese-tfx",
                                 help="KFP experiment of the recurring run (created if "
                                 "missing; default: %(default)s).")
    schedule_parser.add_argument("--recurring-run-name", default="",
                                 help="Name of the recurring run (default: "
                                 "<pipeline-name>-scheduled). A run of that name is replaced.")
    schedule_parser.add_argument("--description", default="",
                                 help="Description of the pipeline version and recurring run.")
    schedule_parser.add_argument("--service-account", default=None,
                                 help="Kubernetes service account the runs use (e.g. one with "
                                 "access to the bucket).")
    schedule_parser.add_argument("--max-concurrency", type=int, default=1,
                                 help="Runs of the schedule that may overlap (default: "
                                 "%(default)s).")
    schedule_parser.add_argument("--package", default=None,
                                 help="Upload this already compiled YAML instead of compiling.")
    schedule_parser.add_argument("--dry-run", action="store_true",
                                 help="Print the KFP API calls (as JSON lines) instead of "
                                 "sending them; needs no server.")
    _add_common(schedule_parser)
    schedule_parser.set_defaults(func=schedule_command)
