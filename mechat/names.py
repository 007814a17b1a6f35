"""Names that are unique in any case: the nicknames of §3.1 and the rooms of §3.2.

Plain data, with no lock of its own: the Matchmaker uses one
:class:`Names` for its clients and :class:`~mechat.rooms.Rooms` one for
its rooms, always with the Matchmaker's one lock held.
"""

from typing import Dict, Generic, Iterable, List, Optional, Tuple, TypeVar

from mechat.protocol import matcher

T = TypeVar("T")


class Names(Generic[T]):
    """Things found by a name in any case (ASCII), and each name as its holder chose it."""

    def __init__(self) -> None:
        self._holders: Dict[str, T] = {}
        #: The same names, lower case to as chosen: a list copies them at C speed.
        self._spelled: Dict[str, str] = {}

    def holder(self, name: str) -> Optional[T]:
        """Return what ``name`` stands for, in any case, or None."""
        return self._holders.get(name.lower())

    def add(self, name: str, holder: T) -> None:
        """Give ``name`` to ``holder``; the caller has checked that no other holds it."""
        self._holders[name.lower()] = holder
        self._spelled[name.lower()] = name

    def spelling(self, name: str) -> str:
        """Return ``name`` as its holder chose it; the caller knows it is held."""
        return self._spelled[name.lower()]

    def discard(self, name: str, holder: T) -> None:
        """Free ``name`` if ``holder`` holds it."""
        key = name.lower()
        if self._holders.get(key) is holder:
            del self._holders[key]
            del self._spelled[key]

    def holders(self) -> Iterable[T]:
        """Return every holder (a view: copy it before the lock is released)."""
        return self._holders.values()

    def copy(self) -> List[Tuple[str, str]]:
        """Return every name, in lower case and as chosen, for a list made outside the lock."""
        return list(self._spelled.items())

    def __len__(self) -> int:
        return len(self._holders)


def matching(names: List[Tuple[str, str]], pattern: str) -> List[str]:
    """Return the names, as chosen, of the copied ``names`` that match ``pattern`` (§6.1)."""
    if pattern == "*":
        return [name for _, name in names]
    matches = matcher(pattern)
    return [name for key, name in names if matches(key)]
