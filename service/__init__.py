"""The adapters that serve the core: ``http`` (the BentoML service), ``worker`` (the Huey queue) and
``dicom_node`` (the C-STORE node), each importing only the core and the pieces beside them here
(the model store, result metrics, the metrics server). ``service.service`` is the BentoML entry point.
"""
