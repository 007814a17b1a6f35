"""spec/mechat.abnf as a test oracle, built on the PyPI ``abnf`` package.

The grammar is loaded once per process into :class:`MechatRule` (loading it
twice would redefine every rule).  :func:`matches` answers "does this line
match this rule?" for raw octets: ``abnf`` parses ``str``, so a line is
decoded as Latin-1, which maps each octet to the code point of the same
number, and the grammar's ``%x80-FF`` ranges then stand for single octets,
as the grammar says they do.

``abnf`` is a backtracking parser written in Python: a 2000-octet line
takes a few hundred milliseconds.  Answers are cached, because the wire
check and the examples ask about the same lines many times; parses run
with the garbage collector paused; and :func:`forget_parses` empties the
memo that old ``abnf`` releases keep of every line they ever parsed.
"""

import functools
import gc
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, FrozenSet, Iterator, List, Set, Tuple

from abnf import Node, ParseError, Rule
from abnf.parser import ABNFGrammarRule, ParseCache

SPEC = Path(__file__).resolve().parent.parent / "spec"
GRAMMAR_PATH = SPEC / "mechat.abnf"
PROSE_PATH = SPEC / "protocol.md"

#: The rules that no other rule uses; mechat.abnf lists them in its header.
START_RULES = frozenset(
    {"framed-line", "line-octets", "nickname-phase-line", "chat-phase-line", "server-line"}
    | {"server-line-octets", "room-phase-line"}
)

#: The RFC 5234 Appendix B core rules, which the grammar uses but never defines.
CORE_RULES = frozenset(
    {"ALPHA", "BIT", "CHAR", "CR", "CRLF", "CTL", "DIGIT", "DQUOTE", "HEXDIG", "HTAB", "LF"}
    | {"LWSP", "OCTET", "SP", "VCHAR", "WSP"}
)


class MechatRule(Rule):
    """The rules of spec/mechat.abnf, apart from every other grammar's."""


MechatRule.from_file(GRAMMAR_PATH)


@functools.lru_cache(maxsize=1 << 16)  # the wire check asks about many lines
def matches(rule: str, line: bytes) -> bool:
    """Say whether the octets ``line`` match ``rule`` from start to end."""
    with collector_paused():
        try:
            MechatRule(rule).parse_all(line.decode("latin-1"))
        except ParseError:
            return False
    return True


@contextmanager
def collector_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector from running inside the block, as timeit does."""
    # A parse builds millions of lists and matches (abnf copies the list of
    # matched nodes once per repetition), which survive into the collector's
    # older generations and trigger full collections over the whole heap;
    # yet reference counting frees all of them when the parse returns, and
    # none is in a cycle.  Pausing saves about a tenth of the parsing time.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def forget_parses() -> None:
    """Empty the memo of every line parsed that abnf before 2.8 keeps for ever."""
    # abnf 2.4, the last release for Python 3.9, memoises the matches of
    # each repetition by (whole line, offset) and never evicts: tens of
    # megabytes for a 2,000-octet line, a gigabyte by the end of a session,
    # which slows every full collection and the interpreter's exit.  The
    # memo only ever helps with the line at hand (a relayed line parsed as
    # ``message``, then as ``server-line``), and matches() remembers answers
    # by itself.  abnf 2.8 scoped the memo to one parse (declaresub/abnf#180)
    # and deprecated ParseCache, so this set is then empty; its
    # clear_caches() would raise a DeprecationWarning, which is an error here.
    for cache in ParseCache.objects:
        cache.clear()


def valid(rule: str, line: bytes) -> bool:
    """Say whether ``line`` is a whole valid line of kind ``rule``: its rule and its octet limit (§2.3).

    A client's line is at most line-octets; a server's, server-line-octets.
    """
    limit = "server-line-octets" if rule in server_rules() else "line-octets"
    return matches(limit, line) and matches(rule, line)


@functools.cache
def server_rules() -> FrozenSet[str]:
    """Return the rules of lines the server sends: server-line and every rule it is made of."""
    notices = definitions()["notice"].split(" / ")
    return frozenset({"server-line", "relayed-message", "notice", *notices})


# -- The grammar's own structure, for the lint ------------------------------


def grammar_tree() -> Node:
    """Parse mechat.abnf with RFC 5234's grammar of ABNF and return the tree."""
    text = GRAMMAR_PATH.read_text(encoding="ascii").replace("\n", "\r\n")
    node: Node = ABNFGrammarRule("rulelist").parse_all(text)
    return node


def walk(node: Node) -> Iterator[Node]:
    """Yield ``node`` and every node below it."""
    yield node
    for child in node.children:
        yield from walk(child)


@functools.cache
def defined_and_referenced() -> Tuple[List[str], Set[str]]:
    """Return the rules the grammar defines, in order, and the rule names it uses."""
    defined: List[str] = []
    referenced: Set[str] = set()
    for rule in (child for child in grammar_tree().children if child.name == "rule"):
        parts = {child.name: child for child in rule.children}
        defined.append(parts["rulename"].value)
        referenced |= {node.value for node in walk(parts["elements"]) if node.name == "rulename"}
    return defined, referenced


@functools.cache
def definitions() -> Dict[str, str]:
    """Return each rule's definition as text, comments dropped and spaces collapsed."""
    result: Dict[str, str] = {}
    name = ""
    for raw in GRAMMAR_PATH.read_text(encoding="ascii").splitlines():
        text = raw.split(";", 1)[0]  # no literal in mechat.abnf holds a ";"
        start = re.match(r"([A-Za-z][A-Za-z0-9-]*) = (.*)", text)
        if start:
            name = start.group(1)
            result[name] = start.group(2)
        elif text[:1].isspace() and text.strip() and name:
            result[name] += " " + text
    return {rule: " ".join(body.split()) for rule, body in result.items()}
