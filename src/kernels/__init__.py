"""Compiled CPU kernels (``csrc/``): convolutions on oneDNN's blocked layouts and oneDNN max pooling,
behind config key ``conv_backend``.

``backend`` and ``build`` import no MindSpore (they run before it is imported); ``onednn_conv`` and
``onednn_pool`` hold the MindSpore cells. Import the submodules directly.
"""
