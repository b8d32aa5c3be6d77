"""A site's own labelled X-rays: validate, calibrate, split, the report and card, and recipes
compared on a later period.

Imports the core and ``training``.
"""
