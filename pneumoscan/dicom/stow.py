"""STOW-RS (DICOM PS3.18 10.5): a ``multipart/related; type="application/dicom"`` body of
instances, read as it streams in, each part checked and filed in the node's store as a C-STORE
would file it (``pneumoscan.dicom.store``), and the DICOM JSON store response.

Only one part is held in memory at a time, and none larger than ``max_part_bytes``. Each part that
cannot be stored gets a FailedSOPSequence item with its FailureReason and a sentence for people
(the HTTP ``Warning`` header carries those):

- 0xA900: not a DICOM Part 10 file, no StudyInstanceUID or SOPInstanceUID, a part declared as
  another type than application/dicom;
- 0xA901: its StudyInstanceUID is not the study the request was posted to;
- 0x0122: a SOP class the store does not take (it takes CR and DX radiographs);
- 0xC122: a transfer syntax the decoders cannot read;
- 0xA700: a part over the size limit; 0x0110: the store could not write it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from pneumoscan.dicom.store import STORAGE_CLASSES, TRANSFER_SYNTAXES, DicomStore, InvalidInstance, is_uid

DICOM = "application/dicom"
PROCESSING_FAILURE, OUT_OF_RESOURCES = 0x0110, 0xA700
NOT_DICOM, OTHER_STUDY = 0xA900, 0xA901
SOP_CLASS_NOT_SUPPORTED, TRANSFER_SYNTAX_NOT_SUPPORTED = 0x0122, 0xC122
ACCEPTED_CLASSES = frozenset(str(uid) for uid in STORAGE_CLASSES)
ACCEPTED_SYNTAXES = frozenset(str(uid) for uid in TRANSFER_SYNTAXES)


class StowRequestError(ValueError):
    """The request as a whole cannot be read (400), or is not multipart/related of DICOM (415)."""

    def __init__(self, detail: str, media_type: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.media_type = media_type


def boundary_of(content_type: str | None) -> bytes:
    """The multipart boundary of a STOW-RS request's Content-Type; StowRequestError otherwise."""
    media, options = parse_options_header(content_type or "")
    kind = options.get(b"type", b"").decode("latin-1").lower()
    if media.lower() != b"multipart/related" or kind not in ("", DICOM):
        raise StowRequestError(
            f'STOW-RS takes multipart/related; type="{DICOM}"; this request was sent as '
            f"{(content_type or 'nothing')[:120]}.",
            media_type=True,
        )
    boundary = options.get(b"boundary")
    if not boundary:
        raise StowRequestError("The multipart/related Content-Type has no boundary.", media_type=True)
    return boundary


@dataclass
class Part:
    """One part's outcome: what it is (when it could be read) and why it failed (None: stored)."""

    number: int
    sop_class: str | None = None
    sop_instance: str | None = None
    study: str | None = None
    patient: str | None = None
    reason: int | None = None
    detail: str | None = None
    new: bool = False

    @property
    def stored(self) -> bool:
        return self.reason is None


@dataclass
class _Reading:
    headers: dict[str, str] = field(default_factory=dict)
    field_name: bytes = b""
    field_value: bytes = b""
    data: bytearray = field(default_factory=bytearray)
    too_large: bool = False


class StowReader:
    """``feed`` the body's chunks, then ``close``: every part's outcome, in order."""

    def __init__(self, store: DicomStore, boundary: bytes, study: str | None, max_part_bytes: int) -> None:
        self.store, self.study, self.max_part_bytes = store, study, max_part_bytes
        self.parts: list[Part] = []
        self.ended = False
        self.reading = _Reading()
        self.parser = MultipartParser(boundary, self._callbacks())

    def _callbacks(self) -> Any:  # python-multipart's MultipartCallbacks
        def begin() -> None:
            self.reading = _Reading()

        def header_field(data: bytes, start: int, end: int) -> None:
            self.reading.field_name += data[start:end]

        def header_value(data: bytes, start: int, end: int) -> None:
            self.reading.field_value += data[start:end]

        def header_end() -> None:
            reading = self.reading
            reading.headers[reading.field_name.decode("latin-1").strip().lower()] = reading.field_value.decode(
                "latin-1"
            ).strip()
            reading.field_name, reading.field_value = b"", b""

        def data(chunk: bytes, start: int, end: int) -> None:
            reading = self.reading
            if reading.too_large:
                return
            if len(reading.data) + end - start > self.max_part_bytes:
                reading.too_large, reading.data = True, bytearray()
                return
            reading.data += chunk[start:end]

        def finished() -> None:
            self.ended = True

        return {
            "on_part_begin": begin,
            "on_header_field": header_field,
            "on_header_value": header_value,
            "on_header_end": header_end,
            "on_part_data": data,
            "on_part_end": lambda: self.parts.append(self._file(len(self.parts) + 1, self.reading)),
            "on_end": finished,
        }

    def feed(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except MultipartParseError as exc:
            raise StowRequestError(f"The multipart body is malformed: {exc}") from exc

    def close(self) -> list[Part]:
        if not self.ended:
            raise StowRequestError(
                "The multipart body ends before its closing boundary: it was cut short or is not multipart."
            )
        if not self.parts:
            raise StowRequestError("The multipart body holds no part.")
        return self.parts

    def _file(self, number: int, reading: _Reading) -> Part:
        part = Part(number)
        declared = reading.headers.get("content-type", DICOM).split(";")[0].strip().lower()
        if reading.too_large:
            return _failed(part, OUT_OF_RESOURCES, f"it is over the {self.max_part_bytes:,}-byte limit per instance")
        if declared != DICOM:
            return _failed(part, NOT_DICOM, f"it is {declared[:80]}, not {DICOM}")
        try:
            dataset = pydicom.dcmread(io.BytesIO(bytes(reading.data)), stop_before_pixels=True)
        except (InvalidDicomError, EOFError, ValueError, TypeError, AttributeError, OverflowError) as exc:
            return _failed(part, NOT_DICOM, f"it is not a DICOM Part 10 file ({type(exc).__name__})")
        part.sop_class = _text(dataset.file_meta.get("MediaStorageSOPClassUID") or dataset.get("SOPClassUID"))
        part.sop_instance = _text(dataset.get("SOPInstanceUID"))
        part.study, part.patient = _text(dataset.get("StudyInstanceUID")), _text(dataset.get("PatientID"))
        syntax = _text(dataset.file_meta.get("TransferSyntaxUID"))
        if not is_uid(part.sop_instance) or not is_uid(part.study):
            return _failed(part, NOT_DICOM, "it has no valid SOPInstanceUID or StudyInstanceUID")
        if self.study is not None and part.study != self.study:
            return _failed(part, OTHER_STUDY, "it belongs to another study than the one in the URL")
        if part.sop_class not in ACCEPTED_CLASSES:
            return _failed(part, SOP_CLASS_NOT_SUPPORTED, "its SOP class is not a CR or DX radiograph")
        if syntax not in ACCEPTED_SYNTAXES:
            return _failed(part, TRANSFER_SYNTAX_NOT_SUPPORTED, f"its transfer syntax {syntax} cannot be decoded")
        try:
            _, part.new = self.store.put(part.study, part.sop_instance, bytes(reading.data))
        except InvalidInstance as exc:
            return _failed(part, NOT_DICOM, str(exc))
        except OSError as exc:
            return _failed(part, PROCESSING_FAILURE, f"it could not be stored ({exc.strerror or exc})")
        return part


def _text(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


def _failed(part: Part, reason: int, detail: str) -> Part:
    part.reason, part.detail = reason, f"part {part.number}: {detail}"
    return part


def _uid(value: str | None) -> dict:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def store_response(parts: list[Part]) -> dict:
    """The Store Instances response (PS3.18 10.5.3) in DICOM JSON: ReferencedSOPSequence for the
    parts stored, FailedSOPSequence with a FailureReason for the others."""
    response: dict = {}
    failed = [
        {"00081150": _uid(p.sop_class), "00081155": _uid(p.sop_instance), "00081197": {"vr": "US", "Value": [p.reason]}}
        for p in parts
        if not p.stored
    ]
    stored = [{"00081150": _uid(p.sop_class), "00081155": _uid(p.sop_instance)} for p in parts if p.stored]
    if failed:
        response["00081198"] = {"vr": "SQ", "Value": failed}
    if stored:
        response["00081199"] = {"vr": "SQ", "Value": stored}
    return response


def store_status(parts: list[Part]) -> int:
    """200 when every part was stored, 202 when some were, 409 when none was."""
    stored = sum(part.stored for part in parts)
    return 200 if stored == len(parts) else 202 if stored else 409
