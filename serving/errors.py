"""The error the local server's parts raise for a request or a load: a gRPC status code, as TF
Serving would answer, and a message. Kept apart so the batcher and the manager share it without
importing each other."""

from __future__ import annotations

import grpc


class ServingStatusError(Exception):
    """A request or load failure with the gRPC status code TF Serving would answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
