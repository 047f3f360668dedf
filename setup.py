"""Build step for the optional C modules (everything else is in pyproject.toml).

``dbward.wire._speedups`` (the row loops) and ``dbward.audit._syncer`` (the audit journal's
background fsync, in a thread that never takes the GIL) are built when a C compiler and the
Python headers are there; when not, installation goes on without them and dbward uses its
pure-Python code for the same work (``dbward.wire.postgres.framing.data_rows``, an fsync in
a worker thread of the event loop), which gives the same results, more slowly. ``dbward
doctor`` says which ones a node uses.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "dbward.wire._speedups",
            sources=["src/dbward/wire/_speedups.c"],
            optional=True,
        ),
        Extension(
            "dbward.audit._syncer",
            sources=["src/dbward/audit/_syncer.c"],
            optional=True,
        ),
    ]
)
