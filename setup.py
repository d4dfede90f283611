"""Build script: package layout and (from the csrc work) the compiled extension r1core._C.

Metadata lives in pyproject.toml. This file only adds what a static table cannot express:
the Triton kernels folder mapped to ``r1core.kernels`` and the optional C++/CUDA extension.
"""

from setuptools import find_packages, setup

packages = find_packages(include=["r1core", "r1core.*"]) + ["r1core.kernels"]

setup(packages=packages)
