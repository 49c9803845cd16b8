"""The one table from domain error codes to gRPC status codes."""

from __future__ import annotations

import grpc

from zonestore_node.model.errors import Code

_STATUS = {
    Code.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Code.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Code.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Code.ABORTED: grpc.StatusCode.ABORTED,
    Code.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    Code.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Code.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Code.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    Code.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    Code.INTERNAL: grpc.StatusCode.INTERNAL,
}


def status_of(code: Code) -> grpc.StatusCode:
    return _STATUS[code]


class Unimplemented(Exception):
    """A feature of the API that zonestore does not serve."""


def unimplemented(message: str) -> Unimplemented:
    return Unimplemented(message)
