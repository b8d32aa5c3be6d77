"""The drift reference saved beside a model, and ``pneumoscan drift``'s report and plot.

Imports the core and ``training``.
"""
