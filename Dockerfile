# The pipeline image: every Kubeflow component runs in it, and so do the Beam SDK workers
# (Dataflow's --sdk_container_image, or the worker pool sidecar of Flink and Spark).
# Build from the repo root: docker build -t <registry>/siamese-tfx:<tag> .  (kubeflow/README.md)

# Python of the TFX base image: the Beam SDK harness copied below must match it.
ARG PYTHON_VERSION=3.10
ARG BEAM_VERSION=2.59.0

FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS beam

FROM tensorflow/tfx:1.16.0

# TFX 1.16 on TensorFlow 2.16 needs Keras 2 (tf-keras).
ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Beam's SDK harness entrypoint, which Dataflow and Beam worker pools start. Kubeflow sets each
# component's command itself (TFX's kubeflow_v2_run_executor), so it does not use it.
COPY --from=beam /opt/apache/beam /opt/apache/beam

# Graphviz's dot: the Trainer draws the network (model.png, backbone.png) with Keras's plot_model
# through pydot. The base image's distribution chooses its version; the lock pins Python only.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends graphviz \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /pipeline
COPY constraints.txt pyproject.toml README.md ./
COPY pipeline/ pipeline/
COPY components/ components/
COPY serving/ serving/
COPY kubeflow/ kubeflow/

# The same pins as the lock (constraints.txt): TFX 1.16 declares python<3.11, hence
# --ignore-requires-python, exactly as the Makefile installs it. The import check fails the
# build when the project's code does not load in the image.
RUN python -m pip install --no-cache-dir --ignore-requires-python -c constraints.txt . \
    && python -c "import siamese_tfx.components.trainer.train, siamese_tfx.kubeflow.runner"

ENTRYPOINT ["/opt/apache/beam/boot"]
