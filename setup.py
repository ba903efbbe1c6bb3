"""The optional C kernel of the layer sampler; everything else is in pyproject.toml.

``optional=True``: where no C compiler (or no Python headers) is found the build prints a
warning and the package installs without ``tuidebug.probe._onepass``; the sampler then uses
torch's reductions (statbuffer.py), at about twice the cost per sampled step on a CPU model.
"""

import sys

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tuidebug.probe._onepass",
            ["tuidebug/probe/_onepass.c"],
            optional=True,
            # -O3: the lane loops must vectorise (-O2 measured 2x slower with GCC 12).
            extra_compile_args=["/O2"] if sys.platform == "win32" else ["-O3"],
        )
    ]
)
