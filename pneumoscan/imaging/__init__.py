"""Bytes to model input, and the input gate that asks whether an image is a chest X-ray.

Imports the shared ground (errors, schemas) and ``pneumoscan.dicom``.
"""
