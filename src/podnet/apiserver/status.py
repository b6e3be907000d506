"""podnet's errors as the Kubernetes Status objects clients decode (apimachinery's StatusError).

kubectl prints `Error from server (<Reason>): <message>` from these; client libraries branch on code and
reason. A 422 names each bad field in details.causes, as kube-apiserver's field errors do.
"""

from __future__ import annotations

from typing import Any

from podnet.errors import AllocationError, AlreadyExists, Conflict, NotFound, PodnetError, ValidationError
from podnet.store.base import StoreError, ValueTooLarge

REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
           406: "NotAcceptable", 409: "Conflict", 410: "Expired", 413: "RequestEntityTooLarge",
           415: "UnsupportedMediaType", 422: "Invalid", 500: "InternalError", 503: "ServiceUnavailable"}


class ApiError(PodnetError):
    """An error to answer with a Status object."""

    def __init__(self, code: int, message: str, *, reason: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            doc["details"] = self.details
        return doc


def from_podnet(err: PodnetError, *, kind: str, plural: str, name: str, group: str = "") -> ApiError:
    """The Status a podnet error maps to, for an object of kind/name."""
    details: dict[str, Any] = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    if isinstance(err, ValidationError):
        causes = [{"reason": "FieldValueInvalid", "message": f"Invalid value: {p.value!r}: {p.reason}"
                   if p.value is not None else p.reason, "field": p.field} for p in err.problems]
        details = {"name": name, "kind": kind, "causes": causes}
        if group:
            details["group"] = group
        fields = "; ".join(f"{p.field}: {p.reason}" for p in err.problems)
        return ApiError(422, f'{kind} "{name}" is invalid: {fields}', details=details)
    if isinstance(err, AlreadyExists):
        return ApiError(409, str(err), reason="AlreadyExists", details=details)
    if isinstance(err, Conflict):
        return ApiError(409, str(err), details=details)
    if isinstance(err, NotFound):
        return ApiError(404, str(err), details=details)
    if isinstance(err, ValueTooLarge):
        return ApiError(413, f'{kind} "{name}": {err}', details=details)
    if isinstance(err, StoreError):  # not the request's fault: what the middleware answers for any store error
        return ApiError(503, f"the store is unavailable: {err}")
    if isinstance(err, AllocationError):
        causes = [{"reason": "FieldValueInvalid", "message": str(err), "field": "spec"}]
        return ApiError(422, f'{kind} "{name}" is invalid: {err}', details={**details, "causes": causes})
    return ApiError(500, str(err))
