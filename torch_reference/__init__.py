"""Independent PyTorch builds of the authors' DropCov networks, written from their code.

The yardstick the tests compare this repository's MindSpore networks, converter and maths against, and the
PyTorch side of the benchmarks: ``resnet`` (their DropCov ResNets) and ``vit`` (their DeiT-S / T2T-ViT-14
DropCov transformers). PyTorch is needed only here (``requirements-dev.txt``).
"""
