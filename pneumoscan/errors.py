"""The pneumoscan error tree.

Every error carries a stable machine-readable ``code``; adapters translate them at the boundary
(HTTP status in the service, per-file error rows in the worker, exit codes in the CLI)::

    PneumoscanError
    ├── InvalidImage            the input cannot become a model input
    │   ├── UnreadableFile          a path that cannot be read (missing, a folder, no permission)
    │   ├── EmptyImage              zero bytes
    │   ├── NotAnImage              bytes that no supported decoder recognises
    │   ├── UnsupportedFormat       a real image in a format we do not accept (GIF, TIFF, ...)
    │   ├── UnsupportedMode         a pixel mode we cannot map to grayscale (CMYK, float, 1-bit)
    │   ├── TruncatedImage          decoding stopped early: a partial or corrupt file
    │   ├── ImageTooLarge           more pixels than the configured limit (decompression bombs)
    │   ├── ImageTooSmall           fewer than 64 pixels on a side: a thumbnail or icon, not an X-ray
    │   ├── NoPixelData             a DICOM file without an image (a report, a presentation state)
    │   ├── MultiFrameImage         a DICOM file with several frames
    │   ├── UnsupportedModality     a DICOM image that is not a radiograph (CT, MR, US, ...)
    │   ├── UnsupportedView         a DICOM radiograph that is not frontal (lateral, decubitus, oblique)
    │   ├── UnsupportedBodyPart     a DICOM radiograph whose BodyPartExamined names another part than the chest
    │   ├── NotForPresentation      a DICOM "FOR PROCESSING" image (raw detector data, not for display)
    │   ├── BlankImage              no usable content: near-constant, too few grey levels, or a
    │   │                           DICOM display transform that is not finite or degenerate
    │   ├── ColourImage             a JPEG or PNG in colour over much of its area: a photograph,
    │   │                           a fundus or histology image, a drawing, not a radiograph
    │   └── NotAChestXray           decodes fine, but the model's features are far from every
    │                               training X-ray (a photo, a drawing, another body part)
    ├── JobError                a batch job cannot be created, found or read
    │   ├── FolderNotAllowed        an input folder outside PNEUMOSCAN_INPUT_ROOTS
    │   ├── FolderNotFound          an input folder that does not exist or is not a folder
    │   ├── JobNotFound             no job with that id or folder
    │   ├── JobNotFinished          results asked for before every file is scored
    │   ├── ResultNotFound          a finished job without the file asked for (summary.png)
    │   ├── QueueUnavailable        the job queue cannot be reached (Redis down); the job is kept, retry
    │   ├── SourceNotAllowed        a DICOMweb source outside PNEUMOSCAN_DICOMWEB_SOURCES
    │   ├── SourceUnavailable       the PACS a job's DICOMweb query names cannot be queried or fetched from
    │   └── WorkerCrashed           a file that kept killing workers (a results.csv error row)
    ├── AuditUnavailable        the audit record of a request cannot be written; nothing is served
    ├── ModelError              the saved model or its metadata is missing or unusable
    ├── DataError               a training/evaluation data folder is unusable
    └── ConfigurationError      settings that cannot be used together, or files they name that
                                cannot be loaded (the DICOM node's TLS certificate and key)

The HTTP adapter adds errors that only exist over HTTP (``service/http/errors.py``); those never
appear in a job's rows, so ``error_from_code`` looks only in this module's tree.
"""

from __future__ import annotations


class PneumoscanError(Exception):
    """Base of all pneumoscan errors; ``code`` is stable, ``detail`` is for humans."""

    code: str = "error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "detail": self.detail}


class InvalidImage(PneumoscanError):
    code = "invalid_image"


class UnreadableFile(InvalidImage):
    code = "unreadable_file"


class EmptyImage(InvalidImage):
    code = "empty_image"


class NotAnImage(InvalidImage):
    code = "not_an_image"


class UnsupportedFormat(InvalidImage):
    code = "unsupported_format"


class UnsupportedMode(InvalidImage):
    code = "unsupported_mode"


class TruncatedImage(InvalidImage):
    code = "truncated_image"


class ImageTooLarge(InvalidImage):
    code = "image_too_large"


class ImageTooSmall(InvalidImage):
    code = "image_too_small"


class NoPixelData(InvalidImage):
    code = "no_pixel_data"


class MultiFrameImage(InvalidImage):
    code = "multi_frame_image"


class UnsupportedModality(InvalidImage):
    code = "unsupported_modality"


class UnsupportedView(InvalidImage):
    code = "unsupported_view"


class UnsupportedBodyPart(InvalidImage):
    code = "unsupported_body_part"


class NotForPresentation(InvalidImage):
    code = "not_for_presentation"


class BlankImage(InvalidImage):
    code = "blank_image"


class ColourImage(InvalidImage):
    code = "colour_image"


class NotAChestXray(InvalidImage):
    """``ood_score``: the image's distance as a multiple of the gate's limit, when the gate measured one."""

    code = "not_a_chest_xray"

    def __init__(self, detail: str, ood_score: float | None = None) -> None:
        super().__init__(detail)
        self.ood_score = ood_score


class JobError(PneumoscanError):
    code = "job_error"


class FolderNotAllowed(JobError):
    code = "folder_not_allowed"


class FolderNotFound(JobError):
    code = "folder_not_found"


class JobNotFound(JobError):
    code = "job_not_found"


class JobNotFinished(JobError):
    code = "job_not_finished"


class ResultNotFound(JobError):
    code = "result_not_found"


class QueueUnavailable(JobError):
    code = "queue_unavailable"


class SourceNotAllowed(JobError):
    code = "source_not_allowed"


class SourceUnavailable(JobError):
    code = "source_unavailable"


class WorkerCrashed(JobError):
    code = "worker_crashed"


class AuditUnavailable(PneumoscanError):
    code = "audit_unavailable"


class ModelError(PneumoscanError):
    code = "model_error"


class DataError(PneumoscanError):
    code = "data_error"


class ConfigurationError(PneumoscanError):
    code = "configuration_error"


def error_from_code(code: str, detail: str) -> PneumoscanError:
    """An error recorded as its code and detail (a batch job's error row), as its class again;
    a code no class of this module has comes back as the base class with that code."""
    pending: list[type[PneumoscanError]] = [PneumoscanError]
    while pending:
        cls = pending.pop()
        if cls.code == code and cls.__module__ == __name__:
            return cls(detail)
        pending.extend(cls.__subclasses__())
    error = PneumoscanError(detail)
    error.code = code
    return error
