"""``pneumoscan adapt``: a model version fine-tuned on a site's labelled X-rays, out of fold.

Imports the core, ``training`` and ``training.site``.
"""
