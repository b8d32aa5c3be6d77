"""The model: architectures, the saved folder and the batch ``Predictor``, the decision at the
threshold, offline scoring of files, Grad-CAM and its legend.

Imports the shared ground, ``imaging`` and ``dicom``.
"""
