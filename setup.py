"""Build step for the optional C accelerator (everything else is in pyproject.toml).

``dbward.wire._speedups`` is built when a C compiler and the Python headers are there; when
not, installation goes on without it and dbward uses the pure-Python reference
implementation (``dbward.wire.postgres.framing.data_rows``), which gives the same results,
more slowly. ``dbward doctor`` says which one a node uses.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "dbward.wire._speedups",
            sources=["src/dbward/wire/_speedups.c"],
            optional=True,
        )
    ]
)
