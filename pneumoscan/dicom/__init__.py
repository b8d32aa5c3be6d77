"""DICOM: decoding and the display pipeline, the intended-use checks, the node's store, and the SR and
Secondary Capture results that go back to the PACS.

Imports the shared ground only.
"""
