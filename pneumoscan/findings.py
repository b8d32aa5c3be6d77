"""What a result says, coded once for every rendering of it (DICOM SR, HL7 v2, FHIR).

The finding is SNOMED CT 404684003 "Clinical finding" with the value 233604007 "Pneumonia" (label
PNEUMONIA) or 17621005 "Normal" (label NORMAL, the model's own class name); the probability of
pneumonia is DICOM 122157 "Probability" in UCUM "1". Every rendering also says, in the words below,
that the result is not for diagnostic use.
"""

from __future__ import annotations

from typing import NamedTuple


class Code(NamedTuple):
    """A coded concept as DICOM and HL7 v2 write it: value, coding scheme designator, meaning."""

    value: str
    scheme: str
    meaning: str


FINDING = Code("404684003", "SCT", "Clinical finding")
PNEUMONIA = Code("233604007", "SCT", "Pneumonia")
NORMAL = Code("17621005", "SCT", "Normal")
LABEL_CODES: dict[str, Code] = {"PNEUMONIA": PNEUMONIA, "NORMAL": NORMAL}
PROBABILITY = Code("122157", "DCM", "Probability")
NO_UNITS = Code("1", "UCUM", "no units")

# The short form fits an HL7 NTE and a banner burned into an image; the long form is a FHIR note.
NOT_FOR_DIAGNOSIS = "AI result, not for diagnostic use"
NOT_FOR_DIAGNOSIS_NOTE = (
    "Preliminary automated screening result, not for diagnostic use: pneumoscan is not a medical "
    "device, and a clinician must read the radiograph."
)
