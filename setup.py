"""A shim for Beam's --setup_file: the project is declared in pyproject.toml.

Beam 2.77's stager (apache_beam/runners/portability/stager.py) builds the
package it ships to the workers with `python -m build --no-isolation --sdist`
when `build` is installed, and otherwise falls back to `python setup.py sdist`,
a fallback it offers only for a file named setup.py (--setup_file=pyproject.toml
fails without `build`). Both commands run this file.

The one thing it adds: setuptools puts `tests/test*.py` into every sdist by
default; the package the workers install has no use for the tests, so they are
pruned from the file list (the same as `prune tests` in a MANIFEST.in).
"""

from setuptools import setup
from setuptools.command import egg_info as _egg_info


class _ManifestWithoutTests(_egg_info.manifest_maker):
    def prune_file_list(self) -> None:
        super().prune_file_list()
        self.filelist.prune("tests")


class _EggInfo(_egg_info.egg_info):
    """egg_info writing SOURCES.txt (the sdist's file list) without tests/."""

    def find_sources(self) -> None:
        default = _egg_info.manifest_maker
        _egg_info.manifest_maker = _ManifestWithoutTests
        try:
            super().find_sources()
        finally:
            _egg_info.manifest_maker = default


setup(cmdclass={"egg_info": _EggInfo})
