"""Sphinx configuration for the optax_signvar API reference.

Build (from the repository root; warnings are errors):

    pip install -e . -r docs/requirements.txt
    python docs/check_coverage.py
    python -m sphinx -W --keep-going -b html docs docs/_build/html

The docstring examples are also runnable through Sphinx
(``python -m sphinx -b doctest docs docs/_build/doctest``), although CI runs
them with ``pytest --doctest-modules``.
"""

from __future__ import annotations

import os
import sys

# Import the working tree even when the package is not installed editable.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import optax_signvar  # noqa: E402

project = "optax_signvar"
author = "optax_signvar developers"
copyright = "optax_signvar developers"  # noqa: A001
release = optax_signvar.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
    # sphinx.ext.intersphinx is left out on purpose: the build machines have no
    # internet, so references to optax/jax/numpy objects stay plain text.
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# Unresolved cross-references (``:class:`optax.GradientTransformationExtraArgs```,
# ``:func:`jax.tree.map```, ...) point outside this package; without
# intersphinx they cannot resolve, so they are rendered as text, not errors.
nitpicky = False

# -- autodoc -------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_default_options = {}
# The modules use ``from __future__ import annotations``, so annotations are
# strings; mapping optax's aliases to themselves keeps autodoc from expanding
# ``optax.ScalarOrSchedule`` into its full ``float | Array | Callable[...]``.
autodoc_type_aliases = {
    name: name
    for name in (
        "optax.ScalarOrSchedule",
        "optax.Updates",
        "optax.Params",
        "optax.Schedule",
        "optax.GradientTransformationExtraArgs",
    )
}

# -- napoleon (Google style, as optax) -----------------------------------------
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_include_init_with_doc = False
napoleon_use_admonition_for_examples = False
napoleon_use_admonition_for_references = False
napoleon_use_rtype = False
# ``Attributes:`` of the NamedTuple states render as a field list, so they do
# not clash with the attributes autodoc would document for the fields.
napoleon_use_ivar = True
# The class signature already shows the fields' types; napoleon would evaluate
# them again and print optax.ScalarOrSchedule fully expanded.
napoleon_attr_annotations = False
napoleon_preprocess_types = False

# -- math ----------------------------------------------------------------------
# MathJax is loaded from its CDN by the browser reading the pages; the build
# itself needs no network.

# -- doctest (only for ``-b doctest``) -------------------------------------------
doctest_global_setup = "import jax, jax.numpy as jnp, optax, optax_signvar"
doctest_test_doctest_blocks = "default"

# -- HTML ----------------------------------------------------------------------
try:
    import furo  # noqa: F401

    html_theme = "furo"
except ImportError:  # alabaster ships with Sphinx
    html_theme = "alabaster"
html_title = f"optax_signvar {release}"
html_static_path: list[str] = []
html_show_sourcelink = True

# No warnings are suppressed: the build passes with -W as is.
suppress_warnings: list[str] = []
