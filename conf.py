"""Sphinx configuration of the HTML documentation.

`uffd-uabi html` builds docs/ into build/html with it (warnings as errors,
references checked); by hand: ``sphinx-build -W -n -c . docs build/html``.
The pages say nothing about the uABI themselves: tools/sphinxext.py renders
it from the spec named by `uabi_spec`, with the conformance results of
`uabi_results` beside each behaviour when that file exists.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # tools.sphinxext, also for a plain sphinx-build

project = "uffd-uabi"
author = "the uffd-uabi authors"
copyright = "the uffd-uabi authors; GPL-2.0-only"
language = "en"
smartquotes = False  # the spec's text as written, as in the man page

extensions = ["tools.sphinxext", "tools.sphinx_matrix", "tools.sphinx_bench"]
root_doc = "index"
exclude_patterns = ["_static"]
nitpicky = True

# Both relative to this file; `uffd-uabi html --spec/--results` override them.
uabi_spec = "spec/uffdio_move.yaml"
uabi_results = "build/conformance/results.json"
uabi_matrix = "build/matrix/matrix.json"
uabi_bench = "build/bench/bench.json"

html_theme = "furo"
html_title = project
html_static_path = ["docs/_static"]
html_css_files = ["uabi.css"]
html_show_sourcelink = False
html_copy_source = False
