"""Settings of the pipeline the Kubeflow tests compile."""

IMAGE = "registry.example.com/ml/siamese-tfx:1.2.3"
SHARED = "gs://ml-bucket/siamese"
COMPILE_ARGS = [
    "--image", IMAGE,
    "--beam-runner", "FlinkRunner", "--flink-master", "flink-jobmanager:8081",
    "--beam-temp-location", f"{SHARED}/beam-tmp",
    "--trainer-gpu-type", "nvidia.com/gpu", "--trainer-gpu-count", "2",
    "--trainer-cpu", "12", "--trainer-memory-gb", "48",
    "--component-cpu", "3", "--component-memory-gb", "6",
    "--pipeline-root", f"{SHARED}/root", "--serving-dir", f"{SHARED}/serving",
    "--image-root", f"{SHARED}/images", "--class-depth", "2",
    "--pipeline-name", "siamese-kfp",
]

