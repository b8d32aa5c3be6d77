"""A result rendered for the outside: FHIR R4 resources and Bundles, HL7 v2 ORU^R01.

Imports the shared ground and ``dicom``; sends nothing (that is ``delivery``).
"""
