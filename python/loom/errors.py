"""Loom's exceptions: one class per status code, all subclasses of :class:`LoomError`.

Every failure of the C++ library arrives as an ``absl::Status`` (whose codes are gRPC's); the
package raises it as the class of its code, carrying the code and the one-line message::

    try:
        loom.Model.load("missing.onnx")
    except loom.NotFoundError as e:
        print(e.code, e.message)      # NOT_FOUND cannot open 'missing.onnx': ...

A few classes also derive from the matching built-in exception, so generic handlers work:
``InvalidArgumentError`` is a ``ValueError``, ``DeadlineExceededError`` a ``TimeoutError``,
``UnimplementedError`` a ``NotImplementedError`` and ``UnavailableError`` a ``ConnectionError``.
"""

from __future__ import annotations

from typing import Dict, Type

__all__ = [
    "LoomError",
    "CancelledError",
    "UnknownError",
    "InvalidArgumentError",
    "DeadlineExceededError",
    "NotFoundError",
    "AlreadyExistsError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "FailedPreconditionError",
    "AbortedError",
    "OutOfRangeError",
    "UnimplementedError",
    "InternalError",
    "UnavailableError",
    "DataLossError",
    "UnauthenticatedError",
    "error_from_status",
]


class LoomError(Exception):
    """A failed Loom operation: ``code`` (e.g. ``"INVALID_ARGUMENT"``), ``code_value`` (the
    numeric status code, as gRPC's) and ``message`` (one line saying what is wrong)."""

    code: str = "UNKNOWN"
    code_value: int = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class CancelledError(LoomError):
    """The operation was cancelled (an interrupted tuning run, a cancelled watch)."""

    code, code_value = "CANCELLED", 1


class UnknownError(LoomError):
    """A failure with no more specific code."""

    code, code_value = "UNKNOWN", 2


class InvalidArgumentError(LoomError, ValueError):
    """A bad argument: a value out of range, a malformed file, a wrong input dtype or shape."""

    code, code_value = "INVALID_ARGUMENT", 3


class DeadlineExceededError(LoomError, TimeoutError):
    """A call to the service ran past its deadline."""

    code, code_value = "DEADLINE_EXCEEDED", 4


class NotFoundError(LoomError):
    """A missing file, model, job or database."""

    code, code_value = "NOT_FOUND", 5


class AlreadyExistsError(LoomError):
    """What was to be created exists already."""

    code, code_value = "ALREADY_EXISTS", 6


class PermissionDeniedError(LoomError):
    """Not allowed: another user's job, an unwritable folder."""

    code, code_value = "PERMISSION_DENIED", 7


class ResourceExhaustedError(LoomError):
    """A limit was reached: a model too large for the service, a user's job quota."""

    code, code_value = "RESOURCE_EXHAUSTED", 8


class FailedPreconditionError(LoomError):
    """The operation does not apply in this state: tuning a compiled artifact, kernels for an
    ISA this CPU lacks, a database of a newer schema."""

    code, code_value = "FAILED_PRECONDITION", 9


class AbortedError(LoomError):
    """The operation was aborted (a job that failed or was cancelled while watched)."""

    code, code_value = "ABORTED", 10


class OutOfRangeError(LoomError):
    """A value past the end of a valid range."""

    code, code_value = "OUT_OF_RANGE", 11


class UnimplementedError(LoomError, NotImplementedError):
    """Not supported: an operator without a kernel, a tensor type NumPy has no dtype for."""

    code, code_value = "UNIMPLEMENTED", 12


class InternalError(LoomError):
    """A step failed inside Loom (a kernel that does not compile, a library that does not
    load)."""

    code, code_value = "INTERNAL", 13


class UnavailableError(LoomError, ConnectionError):
    """The service cannot be reached."""

    code, code_value = "UNAVAILABLE", 14


class DataLossError(LoomError):
    """A damaged file: an artifact whose checksum differs, a truncated database."""

    code, code_value = "DATA_LOSS", 15


class UnauthenticatedError(LoomError):
    """The service refused the token (missing, unknown or revoked)."""

    code, code_value = "UNAUTHENTICATED", 16


_BY_CODE: Dict[int, Type[LoomError]] = {
    cls.code_value: cls
    for cls in (
        CancelledError,
        UnknownError,
        InvalidArgumentError,
        DeadlineExceededError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        AbortedError,
        OutOfRangeError,
        UnimplementedError,
        InternalError,
        UnavailableError,
        DataLossError,
        UnauthenticatedError,
    )
}


def error_from_status(code: int, message: str) -> LoomError:
    """The exception for a failed status: the class of ``code`` (``UnknownError`` for a code
    Loom does not know) with ``message``."""
    return _BY_CODE.get(code, UnknownError)(message)
