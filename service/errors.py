"""HTTP-side errors and the one place where every error gets its status code."""

from __future__ import annotations

from http import HTTPStatus

from starlette.responses import JSONResponse

from pneumoscan import errors
from service.jobs import FolderNotAllowed, FolderNotFound, JobError, JobNotFound


class MissingImage(errors.PneumoscanError):
    code = "missing_image"


class UnsupportedMediaType(errors.PneumoscanError):
    code = "unsupported_media_type"


class UploadTooLarge(errors.PneumoscanError):
    code = "upload_too_large"


class TooManyImages(errors.PneumoscanError):
    code = "too_many_images"


class Unauthorized(errors.PneumoscanError):
    code = "unauthorized"


class Overloaded(errors.PneumoscanError):
    code = "overloaded"


class RequestTimeout(errors.PneumoscanError):
    code = "timeout"


STATUS_BY_ERROR: dict[type[errors.PneumoscanError], HTTPStatus] = {
    MissingImage: HTTPStatus.BAD_REQUEST,
    errors.EmptyImage: HTTPStatus.BAD_REQUEST,
    UnsupportedMediaType: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    errors.UnsupportedFormat: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    UploadTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    TooManyImages: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    errors.ImageTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    errors.InvalidImage: HTTPStatus.UNPROCESSABLE_ENTITY,
    Unauthorized: HTTPStatus.UNAUTHORIZED,
    Overloaded: HTTPStatus.SERVICE_UNAVAILABLE,
    RequestTimeout: HTTPStatus.GATEWAY_TIMEOUT,
    FolderNotAllowed: HTTPStatus.FORBIDDEN,
    FolderNotFound: HTTPStatus.NOT_FOUND,
    JobNotFound: HTTPStatus.NOT_FOUND,
    JobError: HTTPStatus.BAD_REQUEST,
}
RETRY_AFTER_SECONDS = 1


def status_for(error: errors.PneumoscanError) -> HTTPStatus:
    """The most specific mapped status along the error's class hierarchy; 500 if none."""
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return HTTPStatus.INTERNAL_SERVER_ERROR


def error_response(error: errors.PneumoscanError, request_id: str | None = None) -> JSONResponse:
    """``{"error": code, "detail": ...}`` with its status, and Retry-After on overload."""
    headers = {}
    if isinstance(error, Overloaded):
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if request_id:
        headers["X-Request-ID"] = request_id
    return JSONResponse(
        {"error": error.code, "detail": error.detail}, status_code=status_for(error), headers=headers
    )
