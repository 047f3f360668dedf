"""The command-line fixtures (a `dbward init`-ed data directory) for the restart test."""

from tests.e2e.cli.conftest import cli, initialised

__all__ = ["cli", "initialised"]
