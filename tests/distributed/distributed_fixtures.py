"""Running the distributed scripts of this folder in fresh Python processes."""

import os
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def script_env(**extra: str) -> dict[str, str]:
    """The test environment (CPU only, Keras 2) for a child process that imports the project."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", CUDA_VISIBLE_DEVICES="",
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def run_script(name: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(HERE, name), *args], env=script_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def free_ports(count: int) -> list[int]:
    """Ports free right now on 127.0.0.1 (held open together so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def compile_siamese(strategy, image, model, learning_rate: float, mixed_precision: bool = False):
    """The Trainer's model as `run_fn` compiles it for the contrastive loss: the real Siamese
    model (`distribute.build_model`), Adam and ContrastiveLoss, in `strategy`'s scope."""
    import tensorflow as tf

    from siamese_tfx.components.trainer import distribute, losses

    with strategy.scope():
        siamese, backbone = distribute.build_model(image, model, mixed_precision)
        siamese.compile(optimizer=tf.keras.optimizers.Adam(learning_rate),
                        loss=losses.ContrastiveLoss(model.margin))
    return siamese, backbone
