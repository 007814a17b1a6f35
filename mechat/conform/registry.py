"""The checks the kit knows: each with an id, a feature, a spec section, and what it needs.

Every check is registered here by the module of its feature (``core`` for
protocol 1).  Its **id** is short and stable, so that ``--only`` can rerun
it and a grader can weigh it; its **section** ties it to the spec; its
**needs** names the step of the preflight (:mod:`mechat.conform.preflight`)
that must work before the check can tell anything: a check of relaying
means nothing against a server that cannot pair two clients.
"""

import enum
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from mechat.conform.clients import Exchange, Session


class Stage(enum.IntEnum):
    """The steps of the preflight, in order; a check needs one of them to have worked."""

    NOTHING = 0  # not even a connection
    CONNECT = 1  # a connection is accepted
    HANG_UP = 2  # a client that hangs up is closed, so a check's clients can be cleared away
    WAIT = 3  # a nickname gets #wait
    PAIR = 4  # a second nickname pairs the two
    RELAY = 5  # a line goes each way, and two lines in one write arrive as two


CheckFunction = Callable[[Session], Exchange]


class Check(NamedTuple):
    """One spec clause: its id, feature, section, title, the function that tries it, and its needs."""

    id: str
    feature: str
    section: str
    title: str
    run: CheckFunction
    needs: Stage = Stage.RELAY


CHECKS: List[Check] = []


def add(check: Check) -> None:
    """Register ``check``; ids are unique across every feature."""
    if any(known.id == check.id for known in CHECKS):
        raise ValueError(f"two checks have the id {check.id!r}")
    CHECKS.append(check)


def checker(feature: str) -> Callable[..., Callable[[CheckFunction], CheckFunction]]:
    """Return the decorator that registers the checks of ``feature``."""

    def check(
        id: str, section: str, title: str, needs: Stage = Stage.RELAY
    ) -> Callable[[CheckFunction], CheckFunction]:
        def register(function: CheckFunction) -> CheckFunction:
            add(Check(id, feature, section, title, function, needs))
            return function

        return register

    return check


def deepest_need(checks: Iterable[Check]) -> Stage:
    """Return the furthest preflight step that any of ``checks`` needs: how far the preflight must go."""
    return max((check.needs for check in checks), default=Stage.NOTHING)


def section_key(section: str) -> Tuple[int, ...]:
    """Order sections numerically (§2.3 before §2.10)."""
    return tuple(int(number) for number in section.lstrip("§").split("."))


def in_section(check: Check, section: str) -> bool:
    """Tell whether ``check`` cites ``section`` or one of its subsections."""
    wanted = section_key(section)
    return section_key(check.section)[: len(wanted)] == wanted


def features() -> List[str]:
    """Return the features that have checks, in the order they were registered."""
    return list(dict.fromkeys(check.feature for check in CHECKS))


def select(wanted_features: Iterable[str], only: Optional[Sequence[str]] = None) -> List[Check]:
    """Return the checks of ``wanted_features``, cut to ``only`` (ids or sections), in spec order.

    Raises ValueError, naming the culprit, for an unknown feature, id or section.
    """
    wanted = list(wanted_features)
    unknown = [feature for feature in wanted if feature not in features()]
    if unknown:
        raise ValueError(f"unknown feature {unknown[0]!r}; the features are {', '.join(features())}")
    chosen = [check for check in CHECKS if check.feature in wanted]
    for name in only or ():
        if not any(matches(check, name) for check in chosen):
            raise ValueError(
                f"no check of the features {', '.join(wanted)} has the id or section {name!r}"
                " (mechat conform --list shows them)"
            )
    if only:
        chosen = [check for check in chosen if any(matches(check, name) for name in only)]
    if not chosen:
        raise ValueError("no checks chosen: name at least one feature (mechat conform --list shows them)")
    return sorted(chosen, key=lambda check: section_key(check.section))


def matches(check: Check, name: str) -> bool:
    """Tell whether ``name``, an id or a section like §2 or §2.1, picks ``check``."""
    if name.startswith("§"):
        return is_section(name) and in_section(check, name)
    return check.id == name


def is_section(name: str) -> bool:
    """Tell whether ``name`` is written like a section: § then numbers with dots."""
    return name.startswith("§") and all(part.isdigit() for part in name[1:].split("."))


def by_id() -> Dict[str, Check]:
    """Return every check by its id."""
    return {check.id: check for check in CHECKS}
