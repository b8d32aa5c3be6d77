"""The HTTP adapter: the FastAPI app mounted into the BentoML service, its routers, middleware,
errors, API page, web page, micro-batcher and model backends.

Imports the core and the shared pieces of ``service``; never the worker or the DICOM node.
"""
