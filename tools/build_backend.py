"""fastpath's build backend: setuptools, plus mypy (mypyc) while building a wheel that compiles the hot modules.

pyproject.toml names this module (backend-path = ["tools"]). A wheel build asks
for mypy only when it will compile (FASTPATH_COMPILE, see tools/build_compiled.py);
an editable install (`make setup`) never asks for it and never compiles: the
checkout's hot modules are compiled in place by `make compiled`.
"""
from __future__ import annotations

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (every other hook is setuptools' own)

import build_compiled


def get_requires_for_build_wheel(config_settings=None):  # type: ignore[no-untyped-def]
    extra = [build_compiled.MYPYC_REQUIREMENT] if build_compiled.compile_requested() else []
    return _setuptools.get_requires_for_build_wheel(config_settings) + extra
