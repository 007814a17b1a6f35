"""Sphinx extension: the ``:test:`` role, which names a test that must exist.

``:test:`test_server.py::test_ghost_waiter_is_never_handed_out``` renders as
that name in monospace, and warns (so ``-W`` fails the build) when
``tests/test_server.py`` has no such test function.  Pages that say "this
test pins it" cannot quietly go on citing a test that was renamed or
deleted.
"""

import ast
from functools import cache
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

from docutils import nodes
from docutils.nodes import Node, system_message
from docutils.parsers.rst.states import Inliner
from sphinx.application import Sphinx
from sphinx.util import logging

log = logging.getLogger(__name__)

TESTS = Path(__file__).resolve().parents[2] / "tests"


@cache
def test_names(filename: str) -> FrozenSet[str]:
    """Return the names of the test functions defined in ``tests/<filename>``."""
    path = TESTS / filename
    if not path.is_file():
        return frozenset()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")
    )


def test_role(
    name: str,
    rawtext: str,
    text: str,
    lineno: int,
    inliner: Inliner,
    options: Optional[Dict[str, Any]] = None,
    content: Optional[List[str]] = None,
) -> Tuple[List[Node], List[system_message]]:
    """Render ``file::test`` as a literal, warning if the test does not exist."""
    filename, _, function = text.partition("::")
    if function not in test_names(filename):
        location = inliner.document.current_source, lineno
        log.warning("no test %s in tests/%s", function, filename, location=location)
    return [nodes.literal(rawtext, "tests/%s::%s" % (filename, function))], []


def setup(app: Sphinx) -> Dict[str, Any]:
    """Register the role."""
    app.add_role("test", test_role)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
