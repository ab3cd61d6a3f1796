"""Sphinx configuration of the streaq documentation (build: ``sphinx-build -W --keep-going``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import streaq  # noqa: E402

project = "streaq"
author = "the streaq developers"
copyright = "the streaq developers"
release = streaq.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]
exclude_patterns = ["_build", "examples"]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "furo" if importlib.util.find_spec("furo") else "alabaster"
html_title = f"streaq {release}"
pygments_style = "sphinx"
