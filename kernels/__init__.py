"""Triton kernels of r1core, installed as ``r1core.kernels``.

Only ``@triton.jit`` functions and the launch helpers that size their grids live here; the
registered ops with autograd are in ``r1core/ops``. Importing this package needs triton.
"""
