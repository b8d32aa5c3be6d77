"""A PACS's own studies as a batch job's input: QIDO-RS finds the instances a query names, WADO-RS
fetches each into the job's input folder when its shard is scored (``dicomweb-client``).

A job's files are ``<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``, listed when the
job is created, so the job holds exactly one row per instance whatever happens to the fetches; a
file already fetched is not fetched again. A fetch is tried ``attempts`` times (1, 2, 4 s apart);
when it still fails the shard stops with ``SourceUnavailable`` and is scored again after its lease
runs out, as for a worker that died.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests
from dicomweb_client.api import DICOMwebClient
from pydantic import BaseModel, Field, field_validator

from pneumoscan.dicom.store import is_uid
from pneumoscan.errors import SourceUnavailable
from pneumoscan.files import durable_write
from pneumoscan.settings import Settings

log = logging.getLogger("pneumoscan.jobs")
STUDY_DATE = r"^(\d{8})?(-(\d{8})?)?$"
UIDS = ("0020000D", "0020000E", "00080018")  # Study, Series and SOP Instance UIDs


class DicomwebQuery(BaseModel):
    """Which instances of a DICOMweb PACS a job scores (QIDO-RS matching, PS3.18 8.3.4)."""

    url: str = Field(pattern=r"^https?://\S+$", description="The PACS's DICOMweb base URL, e.g. http://pacs/dicom-web.")
    studies: list[str] = Field(default=[], max_length=10_000, description="Study Instance UIDs (default: any).")
    study_date: str | None = Field(
        default=None, pattern=STUDY_DATE, description="YYYYMMDD, or a range YYYYMMDD-YYYYMMDD (either end open)."
    )
    modalities: list[str] = Field(default=["CR", "DX"], min_length=1, description="Modalities to match.")
    body_part: str | None = Field(default=None, max_length=16, description="BodyPartExamined, e.g. CHEST.")

    @field_validator("studies")
    @classmethod
    def _uids(cls, studies: list[str]) -> list[str]:
        bad = [uid for uid in studies if not is_uid(uid)]
        if bad:
            raise ValueError(f"not Study Instance UIDs: {', '.join(uid[:64] for uid in bad[:3])}")
        return sorted(set(studies))

    def key(self) -> str:
        """The same query, the same 16 hexadecimal characters (the job's input folder)."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Instance:
    study: str
    series: str
    sop: str

    @property
    def file(self) -> str:
        return f"{self.study}/{self.series}/{self.sop}.dcm"

    @classmethod
    def of_file(cls, file: str) -> Instance:
        study, series, name = file.split("/")
        return cls(study, series, name.removesuffix(".dcm"))


class Pacs:
    """A DICOMweb PACS, with the credentials of ``PNEUMOSCAN_DICOMWEB_*``."""

    def __init__(self, url: str, settings: Settings | None = None, concurrency: int = 4, attempts: int = 3) -> None:
        session = requests.Session()
        if settings is not None:
            if settings.dicomweb_token is not None:
                session.headers["Authorization"] = f"Bearer {settings.dicomweb_token.get_secret_value()}"
            elif settings.dicomweb_username:
                password = settings.dicomweb_password.get_secret_value() if settings.dicomweb_password else ""
                session.auth = (settings.dicomweb_username, password)
            if settings.dicomweb_ca is not None:
                session.verify = str(settings.dicomweb_ca)
        self.client = DICOMwebClient(url.rstrip("/"), session=session, timeout=60)
        self.concurrency, self.attempts = concurrency, attempts

    def find(self, query: DicomwebQuery) -> list[Instance]:
        """Every instance the query matches, sorted, each once."""
        filters: dict[str, str] = {}
        if query.study_date:
            filters["StudyDate"] = query.study_date
        if query.body_part:
            filters["BodyPartExamined"] = query.body_part
        found: set[Instance] = set()
        try:
            studies: list[str | None] = list(query.studies) or [None]
            for study in studies:
                for modality in query.modalities:
                    matches = self.client.search_for_instances(
                        study_instance_uid=study,
                        search_filters={**filters, "Modality": modality},
                        fields=list(UIDS),
                        get_remaining=True,
                    )
                    found.update(instance for instance in map(_instance, matches) if instance is not None)
        except (requests.RequestException, ValueError) as exc:
            raise SourceUnavailable(f"The QIDO-RS query of {query.url} failed: {exc}") from exc
        return sorted(found, key=lambda instance: instance.file)

    def fetch(self, folder: Path, files: list[str]) -> int:
        """Fetches the files not yet in ``folder`` (a few at a time); how many it fetched."""
        missing = [file for file in files if not (folder / file).is_file()]
        if missing:
            with ThreadPoolExecutor(self.concurrency) as pool:
                list(pool.map(lambda file: self._fetch_one(folder, file), missing))
        return len(missing)

    def _fetch_one(self, folder: Path, file: str) -> None:
        instance = Instance.of_file(file)
        for attempt in range(self.attempts):
            try:
                dataset = self.client.retrieve_instance(instance.study, instance.series, instance.sop)
                buffer = io.BytesIO()
                dataset.save_as(buffer, enforce_file_format=True)
                durable_write(folder / file, buffer.getvalue())
                return
            except (requests.RequestException, ValueError, OSError) as exc:
                if attempt + 1 == self.attempts:
                    raise SourceUnavailable(
                        f"WADO-RS could not fetch an instance after {self.attempts} attempts ({type(exc).__name__})."
                    ) from exc
                log.warning("Fetching an instance failed (%s); trying again.", type(exc).__name__)
                time.sleep(2**attempt)


def _instance(match: dict) -> Instance | None:
    values = [match.get(tag, {}).get("Value", [None])[0] for tag in UIDS]
    return Instance(*values) if all(is_uid(value) for value in values) else None


def fetch_job_files(source: dict, folder: Path, files: list[str], settings: Settings | None = None) -> int:
    """The files of a job over ``source`` (its DicomwebQuery, as JSON) not yet in ``folder``, fetched."""
    return Pacs(DicomwebQuery.model_validate(source).url, settings).fetch(folder, files)


def job_input(query: DicomwebQuery, settings: Settings) -> tuple[Path, dict, list[str]]:
    """Where a job over ``query`` keeps its fetched instances, the query as JSON, and its files
    (the instances QIDO-RS finds now)."""
    instances = Pacs(query.url, settings).find(query)
    folder = settings.jobs_root / "dicomweb" / query.key()
    return folder, query.model_dump(mode="json"), [instance.file for instance in instances]
