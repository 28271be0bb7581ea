"""TF Serving's PredictRequests for the model's signatures, and the TensorProtos they carry.

The one place a request for `compare`, `embed`, `identify` or `serving_default` is built: the
client, the warmup writer and the InfraValidator all call these. TensorProtos are built and read
here directly, so no TensorFlow op runs (the generated protos still load the `tensorflow`
package).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

from siamese_tfx.components.contract import features, signatures

_NUMPY_DTYPES = {
    types_pb2.DT_FLOAT: np.float32,
    types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT64: np.int64,
    types_pb2.DT_UINT8: np.uint8,
    types_pb2.DT_BOOL: np.bool_,
}
_VALUE_FIELDS = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
}


def bytes_tensor_proto(values: Sequence[bytes]) -> tensor_pb2.TensorProto:
    """A 1-D DT_STRING TensorProto holding `values` (e.g. encoded images)."""
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(values))]
        ),
        string_val=list(values),
    )


def tensor_proto_to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """A TensorProto of a numeric, bool or string dtype as a numpy array.

    Reads `tensor_content` when present, else the typed `*_val` field (a single value filling
    the whole shape, as TensorFlow allows).
    """
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    size = int(np.prod(shape)) if shape else 1
    if proto.dtype == types_pb2.DT_STRING:
        values = np.array(list(proto.string_val), dtype=object)
    elif proto.dtype in _NUMPY_DTYPES:
        dtype = _NUMPY_DTYPES[proto.dtype]
        if proto.tensor_content:
            values = np.frombuffer(proto.tensor_content, dtype=dtype).copy()
        else:
            values = np.array(getattr(proto, _VALUE_FIELDS[proto.dtype]), dtype=dtype)
    else:
        name = types_pb2.DataType.Name(proto.dtype)
        raise ValueError(f"cannot read a TensorProto of dtype {name}")
    if values.size == size:
        return values.reshape(shape)
    if 0 < values.size < size:
        filled = np.empty(size, dtype=values.dtype)
        filled[: values.size] = values
        filled[values.size :] = values[-1]
        return filled.reshape(shape)
    raise ValueError(f"TensorProto holds {values.size} values for shape {list(shape)}")


def predict_request(
    model_name: str, signature_name: str, inputs: Mapping[str, tensor_pb2.TensorProto],
    version: Optional[int] = None, output_filter: Sequence[str] = (),
) -> predict_pb2.PredictRequest:
    """A PredictRequest for `signature_name` of `model_name` (`version`: None = the newest)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    if version is not None:
        request.model_spec.version.value = version
    request.model_spec.signature_name = signature_name
    for name, proto in inputs.items():
        request.inputs[name].CopyFrom(proto)
    request.output_filter.extend(output_filter)
    return request


def compare_request(model_name: str, lefts: Sequence[bytes], rights: Sequence[bytes],
                    version: Optional[int] = None) -> predict_pb2.PredictRequest:
    """`compare` on the pairs (lefts[i], rights[i]) of encoded images."""
    left_key, right_key = signatures.COMPARE_INPUTS
    return predict_request(model_name, signatures.COMPARE, {
        left_key: bytes_tensor_proto(lefts), right_key: bytes_tensor_proto(rights)}, version)


def embed_request(model_name: str, images: Sequence[bytes],
                  version: Optional[int] = None) -> predict_pb2.PredictRequest:
    """`embed` on encoded images."""
    return predict_request(model_name, signatures.EMBED,
                           {signatures.EMBED_INPUT: bytes_tensor_proto(images)}, version)


def identify_request(model_name: str, images: Sequence[bytes],
                     version: Optional[int] = None) -> predict_pb2.PredictRequest:
    """`identify` (a gallery model) on encoded query images."""
    return predict_request(model_name, signatures.IDENTIFY,
                           {signatures.IDENTIFY_INPUT: bytes_tensor_proto(images)}, version)


def pair_example(left: bytes, right: bytes) -> bytes:
    """A serialized tf.Example of one image pair, as `serving_default` (and TFMA) read it."""
    return example_pb2.Example(features=feature_pb2.Features(feature={
        key: feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[image]))
        for key, image in zip(features.IMAGE_KEYS, (left, right))
    })).SerializeToString()


def examples_request(model_name: str, lefts: Sequence[bytes], rights: Sequence[bytes],
                     version: Optional[int] = None) -> predict_pb2.PredictRequest:
    """`serving_default` on the pairs (lefts[i], rights[i]), as serialized tf.Examples."""
    examples = [pair_example(a, b) for a, b in zip(lefts, rights)]
    return predict_request(model_name, signatures.SERVING_DEFAULT,
                           {signatures.EXAMPLES_INPUT: bytes_tensor_proto(examples)}, version)
