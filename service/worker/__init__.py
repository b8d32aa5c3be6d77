"""The queue worker: the Huey queue, its tasks and consumer.

Imports the core and the shared pieces of ``service``; never the HTTP app or the DICOM node.
"""
