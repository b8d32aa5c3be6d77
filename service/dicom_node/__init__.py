"""The DICOM node: a C-STORE SCP that turns quiet studies into jobs, and its TLS.

Imports the core and the shared pieces of ``service``; never the HTTP app or the worker.
"""
