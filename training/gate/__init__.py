"""Fitting the input gate on a trained model's features, and the images that are not chest X-rays.

Imports the core and ``training``.
"""
