"""DropCov networks in MindSpore: models, data pipelines, training engine and runtime helpers.

Importing this package does no work: no MindSpore context, no argv parsing, no file access.
"""
__version__ = "0.1.0"
