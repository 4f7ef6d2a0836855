"""Helpers shared by the tests, imported one way: `from support.X import ...`.

pyproject.toml's `pythonpath = ["tests"]` puts this package on pytest's
path; test modules import helpers from here and never from each other.
"""
