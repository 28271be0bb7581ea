"""The siamese-tfx pipeline, defined once for every runner (local and Kubeflow).

Model code is named by dotted path, so building (or compiling) the pipeline never imports
TensorFlow model code.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from components import features
from components.pair_example_gen.component import PairExampleGen
from pipeline.config import PipelineConfig, section_to_dict

PREPROCESSING_FN = "components.transform.preprocessing.preprocessing_fn"
RUN_FN = "components.trainer.train.run_fn"

# Component ids, in pipeline order (runners and summaries refer to them).
EXAMPLE_GEN = "PairExampleGen"
STATISTICS_GEN = "StatisticsGen"
SCHEMA_GEN = "SchemaGen"
EXAMPLE_VALIDATOR = "ExampleValidator"
TRANSFORM = "Transform"
TRAINER = "Trainer"
MODEL_RESOLVER = "latest_blessed_model_resolver"
EVALUATOR = "Evaluator"
PUSHER = "Pusher"
COMPONENT_ORDER = (EXAMPLE_GEN, STATISTICS_GEN, SCHEMA_GEN, EXAMPLE_VALIDATOR, TRANSFORM,
                   TRAINER, MODEL_RESOLVER, EVALUATOR, PUSHER)


def make_eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    """Verification accuracy and AUC on the eval split, with the blessing thresholds."""
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
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name=features.SERVING_DEFAULT_SIGNATURE,
                label_key=features.LABEL,
                prediction_key=features.SIMILARITY,
                preprocessing_function_names=[],
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
                ]
            )
        ],
        # Only the metrics above: not the Keras model's compiled loss, which TFMA would
        # otherwise compute on the similarity score.
        options=tfma.Options(include_default_metrics={"value": False}),
    )


def create_pipeline(
    config: PipelineConfig,
    metadata_connection_config: Optional[tfx.orchestration.metadata.ConnectionConfig] = None,
    beam_pipeline_args: Sequence[str] = (),
) -> tfx.dsl.Pipeline:
    """Builds the pipeline from `config`; runners add metadata and Beam settings."""
    if not config.pipeline_root or not config.serving_dir:
        raise ValueError("PipelineConfig needs pipeline_root and serving_dir")
    example_gen = PairExampleGen(data=config.data).with_id(EXAMPLE_GEN)
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"]
    ).with_id(STATISTICS_GEN)
    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True
    ).with_id(SCHEMA_GEN)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    ).with_id(EXAMPLE_VALIDATOR)
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={"image": section_to_dict(config.image)},
    ).with_id(TRANSFORM)
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(num_steps=config.train.train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=config.train.calibration_steps),
        custom_config={
            "image": section_to_dict(config.image),
            "model": section_to_dict(config.model),
            "train": section_to_dict(config.train),
            "seed": config.data.seed,
            "model_name": config.model_name,
        },
    ).with_id(TRAINER)
    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id(MODEL_RESOLVER)
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=make_eval_config(config),
        example_splits=["eval"],
    ).with_id(EVALUATOR)
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=os.path.join(config.serving_dir, config.model_name)
            )
        ),
    ).with_id(PUSHER)
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[example_gen, statistics_gen, schema_gen, example_validator, transform,
                    trainer, model_resolver, evaluator, pusher],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )
