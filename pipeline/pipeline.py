"""The siamese-tfx pipeline, defined once for every runner (local and Kubeflow).

Model code is named by dotted path, so building (or compiling) the pipeline never imports
TensorFlow model code.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import tensorflow_data_validation as tfdv
import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.dsl.components.base.base_node import BaseNode
from tfx.types import channel

from siamese_tfx.components.contract import features, signatures
from siamese_tfx.components.contract.config import ValidationConfig, section_to_dict
from siamese_tfx.components.gallery_builder.component import GalleryBuilder
from siamese_tfx.components.infra_validator.component import InfraValidator
from siamese_tfx.components.metrics import verification
from siamese_tfx.components.pair_example_gen.component import PairExampleGen
from siamese_tfx.components.validation_gate.component import (DataValidationGate,
                                                              DataValidationResult)
from siamese_tfx.pipeline.config import PipelineConfig

PREPROCESSING_FN = "siamese_tfx.components.transform.preprocessing.preprocessing_fn"
RUN_FN = "siamese_tfx.components.trainer.train.run_fn"

# Component ids, in pipeline order (runners and summaries refer to them).
EXAMPLE_GEN = "PairExampleGen"
STATISTICS_GEN = "StatisticsGen"
SCHEMA_GEN = "ImportSchemaGen"
EXAMPLE_VALIDATOR = "ExampleValidator"
NO_PREVIOUS_VALIDATION = "no_previous_validation_importer"
VALIDATION_RESOLVER = "previous_validation_resolver"
VALIDATION_GATE = "DataValidationGate"
TRANSFORM = "Transform"
TRAINER = "Trainer"
GALLERY_BUILDER = "GalleryBuilder"  # only with a gallery (GalleryConfig.gallery_path)
MODEL_RESOLVER = "latest_blessed_model_resolver"
EVALUATOR = "Evaluator"
INFRA_VALIDATOR = "InfraValidator"
PUSHER = "Pusher"
COMPONENT_ORDER = (EXAMPLE_GEN, STATISTICS_GEN, SCHEMA_GEN, EXAMPLE_VALIDATOR,
                   NO_PREVIOUS_VALIDATION, VALIDATION_RESOLVER, VALIDATION_GATE, TRANSFORM,
                   TRAINER, GALLERY_BUILDER, MODEL_RESOLVER, EVALUATOR, INFRA_VALIDATOR,
                   PUSHER)
# Components only some configs have.
OPTIONAL_COMPONENTS = (GALLERY_BUILDER,)


def component_ids(config: PipelineConfig) -> tuple[str, ...]:
    """The ids of the components `create_pipeline(config)` builds, in pipeline order."""
    return tuple(c for c in COMPONENT_ORDER
                 if c != GALLERY_BUILDER or config.gallery.enabled)


def make_eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    """Verification accuracy, AUC, the equal error rate and the false non-match rate at the
    target false match rate on the eval split, with the blessing thresholds (absolute, and,
    for accuracy and EER, against the latest blessed model)."""
    higher = tfma.MetricDirection.HIGHER_IS_BETTER
    accuracy_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": config.eval.min_accuracy}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=higher, absolute={"value": -config.eval.max_accuracy_drop}
        ),
    )
    auc_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": config.eval.min_auc})
    )
    eer_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(upper_bound={"value": config.eval.max_eer}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.LOWER_IS_BETTER,
            absolute={"value": config.eval.max_eer_increase},
        ),
    )
    fnmr_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(
            upper_bound={"value": config.eval.max_fnmr_at_fmr})
    )
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                # The serving signature of the SavedModel, not the Keras model: Beam workers
                # (Flink, Spark, the portable runner) load it in fresh processes, where the
                # project's Keras objects (metrics, layers) are not registered. TFMA would pick
                # TF_GENERIC there anyway after the Keras load failed in a fresh driver process
                # (a Kubeflow pod), and TF_KERAS in a process that had run the Trainer.
                model_type=tfma.TF_GENERIC,
                signature_name=signatures.SERVING_DEFAULT,
                label_key=features.LABEL,
                prediction_key=signatures.SIMILARITY,
                preprocessing_function_names=[],
                # The model refuses larger calls (ServingLimitsConfig.serving_max_batch_size).
                inference_batch_size=config.serving_limits.serving_max_batch_size,
            )
        ],
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    tfma.MetricConfig(class_name="BinaryAccuracy", threshold=accuracy_threshold),
                    tfma.MetricConfig(class_name="AUC", threshold=auc_threshold),
                    tfma.MetricConfig(class_name="Precision"),
                    tfma.MetricConfig(class_name="Recall"),
                    tfma.MetricConfig(class_name=verification.EqualErrorRate.__name__,
                                      module=verification.__name__, threshold=eer_threshold),
                    tfma.MetricConfig(
                        class_name=verification.FalseNonMatchRateAtFalseMatchRate.__name__,
                        module=verification.__name__,
                        config=json.dumps({"false_match_rate": config.eval.target_fmr}),
                        threshold=fnmr_threshold),
                ]
            )
        ],
        # Only the metrics above: not the Keras model's compiled loss, which TFMA would
        # otherwise compute on the similarity score.
        options=tfma.Options(include_default_metrics={"value": False}),
    )


def make_validation(
    examples: channel.BaseChannel, validation: ValidationConfig, pipeline_root: str
) -> dict[str, BaseNode]:
    """The data validation nodes for `examples`, by component id, in pipeline order.

    The curated schema is imported, not inferred, so a label outside {0, 1} or a missing feature
    is an anomaly. The gate fails the run on any anomaly (ExampleValidator's, class balance,
    split sizes, drift from the previous accepted run's result, which the resolver finds under
    `pipeline_root`'s pipeline) unless `validation.allow_anomalies`.
    """
    # LatestArtifactStrategy (the one Kubeflow V2 also runs) fails when it finds nothing, so a
    # result without drift statistics, imported once, stands for "no previous run": its URI is
    # the pipeline root (it exists, and holds no drift_statistics/). Any real result is newer.
    no_previous = tfx.dsl.Importer(
        source_uri=pipeline_root, artifact_type=DataValidationResult
    ).with_id(NO_PREVIOUS_VALIDATION)
    previous = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
        result=tfx.dsl.Channel(type=DataValidationResult),
    ).with_id(VALIDATION_RESOLVER)
    previous.add_upstream_node(no_previous)
    statistics_gen = tfx.components.StatisticsGen(
        examples=examples,
        # Image domain statistics (the image format histogram) for the image features.
        stats_options=tfdv.StatsOptions(enable_semantic_domain_stats=True),
    ).with_id(STATISTICS_GEN)
    schema_gen = tfx.components.ImportSchemaGen(
        schema_file=validation.schema_path or features.SCHEMA_FILE
    ).with_id(SCHEMA_GEN)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    ).with_id(EXAMPLE_VALIDATOR)
    gate = DataValidationGate(
        examples=examples,
        statistics=statistics_gen.outputs["statistics"],
        anomalies=example_validator.outputs["anomalies"],
        previous_result=previous.outputs["result"],
        validation=validation,
    ).with_id(VALIDATION_GATE)
    nodes = (statistics_gen, schema_gen, example_validator, no_previous, previous, gate)
    return {node.id: node for node in nodes}


def create_pipeline(
    config: PipelineConfig,
    metadata_connection_config: Optional[tfx.orchestration.metadata.ConnectionConfig] = None,
    beam_pipeline_args: Sequence[str] = (),
) -> tfx.dsl.Pipeline:
    """Builds the pipeline from `config`; runners add metadata and Beam settings."""
    if not config.pipeline_root or not config.serving_dir:
        raise ValueError("PipelineConfig needs pipeline_root and serving_dir")
    example_gen = PairExampleGen(data=config.data).with_id(EXAMPLE_GEN)
    validation = make_validation(example_gen.outputs["examples"], config.validation,
                                 config.pipeline_root)
    schema = validation[SCHEMA_GEN].outputs["schema"]
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema,
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={"image": section_to_dict(config.image)},
    ).with_id(TRANSFORM)
    # Nothing is transformed (or trained) before the gate has passed the data.
    transform.add_upstream_node(validation[VALIDATION_GATE])
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema,
        train_args=tfx.proto.TrainArgs(num_steps=config.train.train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=config.train.calibration_steps),
        custom_config=config.trainer_settings().to_custom_config(),
    ).with_id(TRAINER)
    # With a gallery, the model evaluated, validated and pushed is the Trainer's plus the
    # gallery and identify.
    gallery_builder, candidate = None, trainer.outputs["model"]
    if config.gallery.enabled:
        gallery_builder = GalleryBuilder(
            model=trainer.outputs["model"], gallery=config.gallery, model_name=config.model_name
        ).with_id(GALLERY_BUILDER)
        candidate = gallery_builder.outputs["gallery_model"]
    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id(MODEL_RESOLVER)
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=candidate,
        baseline_model=model_resolver.outputs["model"],
        eval_config=make_eval_config(config),
        example_splits=["eval"],
    ).with_id(EVALUATOR)
    # The candidate must also answer through the serving stack (a separate model server
    # process) as it does in-process: Pusher needs both blessings.
    infra_validator = InfraValidator(
        model=candidate, infra=config.infra, model_name=config.model_name
    ).with_id(INFRA_VALIDATOR)
    pusher = tfx.components.Pusher(
        model=candidate,
        model_blessing=evaluator.outputs["blessing"],
        infra_blessing=infra_validator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=os.path.join(config.serving_dir, config.model_name)
            )
        ),
    ).with_id(PUSHER)
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[example_gen, *validation.values(), transform, trainer,
                    *([gallery_builder] if gallery_builder else []), model_resolver,
                    evaluator, infra_validator, pusher],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )
