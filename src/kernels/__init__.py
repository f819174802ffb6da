"""Compiled CPU kernels: convolutions on oneDNN's blocked layouts (``csrc/``), behind config key ``conv_backend``.

``backend`` and ``build`` import no MindSpore (they run before it is imported); ``onednn_conv`` holds the
MindSpore cells. Import the submodules directly.
"""
