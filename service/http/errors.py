"""HTTP-side errors and the one place where every error gets its status code."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

from fhir.resources.R4B.operationoutcome import OperationOutcome
from starlette.responses import JSONResponse, Response

from pneumoscan import errors
from pneumoscan.errors import (
    FolderNotAllowed,
    FolderNotFound,
    JobError,
    JobNotFinished,
    JobNotFound,
    QueueUnavailable,
    ResultNotFound,
)
from pneumoscan.reports.fhir import FHIR_JSON, accepts_fhir
from pneumoscan.reports.fhir import outcome_for as core_outcome_for


class BadRequest(errors.PneumoscanError):
    code = "bad_request"


class MissingImage(errors.PneumoscanError):
    code = "missing_image"


class UnsupportedMediaType(errors.PneumoscanError):
    code = "unsupported_media_type"


class UploadTooLarge(errors.PneumoscanError):
    code = "upload_too_large"


class TooManyImages(errors.PneumoscanError):
    code = "too_many_images"


class NotAcceptable(errors.PneumoscanError):
    code = "not_acceptable"


class Unauthorized(errors.PneumoscanError):
    code = "unauthorized"


class Forbidden(errors.PneumoscanError):
    code = "forbidden"


class RateLimited(errors.PneumoscanError):
    code = "rate_limited"

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Overloaded(errors.PneumoscanError):
    code = "overloaded"


class NotReady(errors.PneumoscanError):
    code = "not_ready"


class RequestTimeout(errors.PneumoscanError):
    code = "timeout"


class ExplanationUnavailable(errors.PneumoscanError):
    code = "explanation_unavailable"


class NotFound(errors.PneumoscanError):
    code = "not_found"


class MethodNotAllowed(errors.PneumoscanError):
    code = "method_not_allowed"


def routing_error(status: int, method: str) -> errors.PneumoscanError | None:
    """The error for a router's own refusal (no such path, or not that method), None otherwise.

    The path is not quoted back: whatever a client put in it stays out of responses and logs.
    """
    if status == HTTPStatus.NOT_FOUND:
        return NotFound("The service has no such path; GET /docs.json lists the paths it has.")
    if status == HTTPStatus.METHOD_NOT_ALLOWED:
        return MethodNotAllowed(f"This path does not take {method[:16]}; the Allow header lists the methods it takes.")
    return None


STATUS_BY_ERROR: dict[type[errors.PneumoscanError], HTTPStatus] = {
    BadRequest: HTTPStatus.BAD_REQUEST,
    MissingImage: HTTPStatus.BAD_REQUEST,
    errors.EmptyImage: HTTPStatus.BAD_REQUEST,
    UnsupportedMediaType: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    errors.UnsupportedFormat: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    UploadTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    TooManyImages: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    errors.ImageTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    errors.InvalidImage: HTTPStatus.UNPROCESSABLE_ENTITY,
    Unauthorized: HTTPStatus.UNAUTHORIZED,
    Forbidden: HTTPStatus.FORBIDDEN,
    RateLimited: HTTPStatus.TOO_MANY_REQUESTS,
    errors.AuditUnavailable: HTTPStatus.SERVICE_UNAVAILABLE,
    NotAcceptable: HTTPStatus.NOT_ACCEPTABLE,
    Overloaded: HTTPStatus.SERVICE_UNAVAILABLE,
    NotReady: HTTPStatus.SERVICE_UNAVAILABLE,
    RequestTimeout: HTTPStatus.GATEWAY_TIMEOUT,
    ExplanationUnavailable: HTTPStatus.NOT_IMPLEMENTED,
    NotFound: HTTPStatus.NOT_FOUND,
    MethodNotAllowed: HTTPStatus.METHOD_NOT_ALLOWED,
    FolderNotAllowed: HTTPStatus.FORBIDDEN,
    FolderNotFound: HTTPStatus.NOT_FOUND,
    JobNotFound: HTTPStatus.NOT_FOUND,
    JobNotFinished: HTTPStatus.CONFLICT,
    QueueUnavailable: HTTPStatus.SERVICE_UNAVAILABLE,
    errors.SourceNotAllowed: HTTPStatus.FORBIDDEN,
    errors.SourceUnavailable: HTTPStatus.BAD_GATEWAY,
    ResultNotFound: HTTPStatus.NOT_FOUND,
    JobError: HTTPStatus.BAD_REQUEST,
}
RETRY_AFTER_SECONDS = 1
QUEUE_RETRY_AFTER_SECONDS = 5  # a queue server restarting
# FHIR OperationOutcome issue types (http://hl7.org/fhir/issue-type) by status.
ISSUE_TYPE_BY_STATUS = {
    HTTPStatus.UNAUTHORIZED: "security",
    HTTPStatus.FORBIDDEN: "forbidden",
    HTTPStatus.NOT_FOUND: "not-found",
    HTTPStatus.METHOD_NOT_ALLOWED: "not-supported",
    HTTPStatus.CONFLICT: "conflict",
    HTTPStatus.TOO_MANY_REQUESTS: "throttled",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "too-costly",
    HTTPStatus.SERVICE_UNAVAILABLE: "transient",
    HTTPStatus.GATEWAY_TIMEOUT: "timeout",
    HTTPStatus.BAD_GATEWAY: "transient",
    HTTPStatus.NOT_IMPLEMENTED: "not-supported",
    HTTPStatus.INTERNAL_SERVER_ERROR: "exception",
}


def status_for(error: errors.PneumoscanError) -> HTTPStatus:
    """The most specific mapped status along the error's class hierarchy; 500 if none."""
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return HTTPStatus.INTERNAL_SERVER_ERROR


def outcome_for(error: errors.PneumoscanError) -> OperationOutcome:
    """The error as a FHIR OperationOutcome, its issue type following the HTTP status."""
    return core_outcome_for(error, ISSUE_TYPE_BY_STATUS.get(status_for(error), "invalid"))


def error_response(
    error: errors.PneumoscanError,
    request_id: str | None = None,
    accept: str = "",
    headers: Mapping[str, str] | None = None,
) -> Response:
    """``{"error": code, "detail": ...}`` with its status, and Retry-After on overload; ``headers``
    are sent too (e.g. the Allow of a 405).

    A client that accepts ``application/fhir+json`` gets the error as a FHIR OperationOutcome.
    """
    headers = dict(headers or {})
    if isinstance(error, Overloaded):
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if isinstance(error, QueueUnavailable):
        headers["Retry-After"] = str(QUEUE_RETRY_AFTER_SECONDS)
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, errors.AuditUnavailable):
        headers["Retry-After"] = str(QUEUE_RETRY_AFTER_SECONDS)
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if request_id:
        headers["X-Request-ID"] = request_id
    status = status_for(error)
    if accepts_fhir(accept):
        return Response(outcome_for(error).json(), status_code=status, headers=headers, media_type=FHIR_JSON)
    return JSONResponse({"error": error.code, "detail": error.detail}, status_code=status, headers=headers)
