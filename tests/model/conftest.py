"""Fixtures shared by the model tests."""

import model_fixtures as fx
import pytest

from siamese_tfx.components.contract.config import ImageConfig


@pytest.fixture(scope="session")
def transform_graphs(tmp_path_factory):
    """Transform graphs (tf.Transform's real output) by image size, written once each."""
    import tensorflow_transform as tft

    graphs = {}

    def get(size: int):
        if size not in graphs:
            out = str(tmp_path_factory.mktemp(f"transform{size}"))
            fx.write_transform_graph(out, ImageConfig(height=size, width=size, channels=1))
            graphs[size] = tft.TFTransformOutput(out)
        return graphs[size]

    return get
