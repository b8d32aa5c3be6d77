"""Training and site tools: fitting a model and its operating point (``train``, ``finalize``), and a
site's work with it (``site``, ``adapt``, ``gate``, ``drift``). Imports the core, never ``service``.
"""
