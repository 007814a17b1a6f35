"""The checks of protocol 2's directory (feature ``directory``): named users, /who, /msg, /all, /next.

Protocol 2 turns a nickname into an address: it is unique (§3.1), a client
can list who is online (§5.4), write to one of them (§5.5) or to all of
them (§5.6), and leave its partner for the next (§5.7).  These checks act
out each rule the way :mod:`~mechat.conform.core` does, with its habits: a
deadline on every read, and markers rather than waiting to prove that
nothing came.  Three more habits come from the fact that the answers now
depend on who else is on the server:

* Every check names its clients with a random tag of its own
  (``qzkfw-alice``), so that a /who pattern (``qzkfw-*``) finds exactly
  its clients, even on a server where other people are chatting, and no
  name it wants can already be taken.
* A count that covers the whole server (``#broadcast_N``, /who with no
  pattern) is held only to what is true however many others are there: it
  counts at least the check's own clients.  Like the core checks, a check
  does assume that nobody else joins the queue, or writes to its clients,
  while it runs.
* Each client sends at most one /all, so that no check depends on the
  limit of one /all a second (§9.7), except the check of that limit,
  which sends two in one write and expects the default rate: a server run
  with the limit off fails that check, and only that one.

When the answer to a line is two lines to the same client (a direct
message to oneself), a *fence* shows that nothing else came: the client
sends a line whose answer must come after both.

A list is a line of up to 2000 octets, too long to compare by eye in a
report, so a list that differs says how: the count, the order, a name
too many or one left out (:data:`LIST_RULES`).
"""

import functools
import secrets
import string
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

from mechat.conform.clients import MATCHED_TO, Client, Exchange, Failure, Session, show
from mechat.conform.core import refused_once, still_chatting
from mechat.conform.diagnose import CLOSED, USER_QUIT, WAIT, Reply, lacks_command, plural, wire
from mechat.conform.registry import Check, Stage, add, checker
from mechat.protocol import COUNT_RE, MAX_LINE_OCTETS, MAX_NICKNAME_CHARS, SP, Notice

FEATURE = "directory"
check = checker(FEATURE)

#: Letters of the random tag that begins every nickname of one check:
#: 26**5 tags, so two checks, or two runs, practically never share one.
TAG_LETTERS = 5

#: Clients in the check of a list cut to fit the line (§6.1).  Their
#: nicknames are 30 characters long, so 70 of them and their spaces take
#: 2170 octets, more than a line holds, and the last few must be cut.
CUT_CLIENTS = 70

#: Characters of a list line shown in a report before it is shortened.
LIST_SHOWN = 120

NICKNAME_TAKEN = wire(Notice.NICKNAME_TAKEN)
INVALID_COMMAND = wire(Notice.INVALID_COMMAND)
RATE_LIMITED = wire(Notice.RATE_LIMITED)
NICK_31 = b"n" * (MAX_NICKNAME_CHARS + 1)


class Names:
    """The nicknames of one check: its random tag, a hyphen and a role, as in ``qzkfw-alice``."""

    def __init__(self) -> None:
        self.tag = "".join(secrets.choice(string.ascii_lowercase) for _ in range(TAG_LETTERS))

    def of(self, role: str) -> str:
        """Return the nickname of ``role`` in this check."""
        return f"{self.tag}-{role}"

    def pattern(self, rest: str = "*") -> bytes:
        """Return a /who pattern: the tag, a hyphen, then ``rest`` (every client of the check by default)."""
        return self.of(rest).encode("ascii")


def nick(client: Client) -> bytes:
    """Return the nickname of ``client`` as it goes on the wire."""
    return client.name.encode("ascii")


def trio(session: Session, names: Names) -> Tuple[Client, Client, Client]:
    """Pair alice with Bob, and leave carol waiting: one chat and one waiter (§7.1)."""
    alice, bob = session.pair(names.of("alice"), names.of("Bob"))
    return alice, bob, session.join(names.of("carol"))


def direct(sender: Client, text: bytes) -> bytes:
    """Return the #from_ line that carries ``text`` from ``sender`` (§5.5)."""
    return wire(Notice.FROM, nick(sender)) + SP + text


def broadcast(sender: Client, text: bytes) -> bytes:
    """Return the #all_from_ line that carries ``text`` from ``sender`` (§5.6)."""
    return wire(Notice.ALL_FROM, nick(sender)) + SP + text


def expect_in_any_order(client: Client, lines: Sequence[bytes]) -> Exchange:
    """Read as many lines as ``lines`` holds, and expect exactly those, in any order."""
    missing = list(lines)
    while missing:
        got = client.read_line()
        if not isinstance(got, bytes) or got not in missing:
            raise Failure(client.judged(missing[0], got))
        missing.remove(got)
    both = " and ".join(show(line) for line in lines)
    return Exchange(client.session.last_sent, f"{client.name} gets {both}, in any order", both)


def expect_recipients(sender: Client, at_least: int) -> Exchange:
    """Read the answer to /all: #broadcast_N, N at least ``at_least``, as others may count too (§5.6)."""
    got = sender.read_line()
    expected = f"{sender.name} gets '#broadcast_N', N >= {at_least}"
    prefix = wire(Notice.BROADCAST)
    count = got[len(prefix) :].decode("latin-1") if isinstance(got, bytes) and got.startswith(prefix) else ""
    if COUNT_RE.fullmatch(count) and int(count) >= at_least:
        return Exchange(sender.session.last_sent, expected, show(got))
    exchange = sender.judged(prefix + b"N", got)._replace(expected=expected)
    if isinstance(got, bytes) and got.startswith(broadcast(sender, b"")):
        own = f"{sender.name} got its own /all back: send #all_from_ to every other named client (§5.6)"
        exchange = exchange._replace(diagnosis=own)
    raise Failure(exchange)


# -- Lists (§5.4, §6.1) -------------------------------------------------------------


def listed(matches: Sequence[str]) -> bytes:
    """Return the list line the spec asks for: the count of ``matches``, then as many as fit, sorted."""
    line = wire(Notice.ONLINE, str(len(matches)).encode("ascii"))
    for name in sorted(matches, key=str.lower):
        item = SP + name.encode("ascii")
        if len(line) + len(item) > MAX_LINE_OCTETS:
            break
        line += item
    return line


class Listing(NamedTuple):
    """A list line as it came, beside what the kit knows should be in it."""

    counted: int  # the count it gave
    names: List[str]  # the names it showed
    octets: int  # its length, without the LF
    mine: Sequence[str]  # the check's own clients that match
    only_mine: bool  # whether nobody else can match (a pattern unique to the check)


def split_list(line: Reply, mine: Sequence[str], only_mine: bool) -> Optional[Listing]:
    """Split an #online_ line into its count and names; None if it is not one (§6.1)."""
    prefix = wire(Notice.ONLINE)
    if not isinstance(line, bytes) or not line.startswith(prefix):
        return None
    count, space, names = line[len(prefix) :].decode("utf-8", "replace").partition(" ")
    if not COUNT_RE.fullmatch(count):
        return None
    return Listing(int(count), names.split(" ") if space else [], len(line), mine, only_mine)


def wrong_count(listing: Listing) -> str:
    """The count is not the number of all matches (§6.1)."""
    matches = len(listing.mine)
    if listing.only_mine and listing.counted != matches:
        return (
            f"the count is {listing.counted}, but {plural(matches, 'client')} match: the count is of every"
            " match, the names cut from the line included (§6.1)"
        )
    if listing.counted < matches or listing.counted < len(listing.names):
        return f"the count is {listing.counted}, fewer than the names it must count (§6.1)"
    return ""


def unsorted(listing: Listing) -> str:
    """The names are not in case-insensitive order (§6.1)."""
    for first, second in zip(listing.names, listing.names[1:]):
        if first.lower() >= second.lower():
            return f"'{first}' comes before '{second}': sort the names case-insensitively, each once (§6.1)"
    return ""


def stranger(listing: Listing) -> str:
    """A name that does not match is listed (§5.4, §6.1)."""
    strangers = [name for name in listing.names if name not in listing.mine]
    if not (listing.only_mine and strangers):
        return ""
    return f"'{strangers[0]}' is listed, but it does not match the pattern (§6.1)"


def left_out(listing: Listing) -> str:
    """A name that matches is missing, though the list was not cut before it (§5.4, §6.1)."""
    shown = set(listing.names)
    missing = [name for name in sorted(listing.mine, key=str.lower) if name not in shown]
    if not missing:
        return ""
    if len(listing.names) >= listing.counted:
        return f"'{missing[0]}' matches, but it is not listed (§5.4)"
    if listing.only_mine and MAX_LINE_OCTETS - listing.octets > len(missing[0]):
        return f"'{missing[0]}' matches, but it is not listed, though the line has room for it (§5.4, §6.1)"
    if listing.names and missing[0].lower() < listing.names[-1].lower():
        return f"'{missing[0]}' is left out, though names after it are shown: cut the list at its end (§6.1)"
    return ""


def stops_early(listing: Listing) -> str:
    """The list shows fewer names than it counts, with room left for any nickname (§6.1)."""
    room = MAX_LINE_OCTETS - listing.octets
    if listing.only_mine or len(listing.names) >= listing.counted or room <= MAX_NICKNAME_CHARS:
        return ""  # with only the check's clients to list, left_out() tells more
    return (
        f"it shows {len(listing.names)} of the {listing.counted} names it counts, with room for more:"
        " show as many as fit (§6.1)"
    )


def too_long(listing: Listing) -> str:
    """The line is longer than a line may be (§2.3, §6.1)."""
    if listing.octets <= MAX_LINE_OCTETS:
        return ""
    return f"the line is {listing.octets} octets: cut the names to fit in {MAX_LINE_OCTETS} (§6.1)"


#: What can be wrong with a list, in the order the report says it.
LIST_RULES: List[Callable[[Listing], str]] = [
    wrong_count,
    too_long,
    unsorted,
    stranger,
    left_out,
    stops_early,
]


def list_problems(got: Reply, mine: Sequence[str], only_mine: bool) -> List[str]:
    """Say every way ``got`` breaks the rules of a list; a line that is no list gets one sentence."""
    listing = split_list(got, mine, only_mine)
    if listing is None:
        return ["it is not an #online_N list (§5.4)"]
    return [problem for problem in (rule(listing) for rule in LIST_RULES) if problem]


def expect_online(client: Client, mine: Sequence[str], only_mine: bool = True) -> Exchange:
    """Read a /who answer; expect exactly the list of ``mine``, or with others too, a list that holds them.

    With ``only_mine`` the pattern is unique to the check, so the line is
    known octet for octet; without it, other clients of the server may be
    listed, and the line is held to the rules alone.
    """
    got = client.read_line()
    if only_mine:
        expected = f"{client.name} gets {show(listed(mine), LIST_SHOWN)}"
    else:
        expected = f"{client.name} gets #online_N, N >= {len(mine)}, with {', '.join(mine)} unless cut"
    problems = list_problems(got, mine, only_mine)
    if isinstance(got, bytes) and lacks_command(client.last_write, got):
        problems = [lacks_command(client.last_write, got)]
    if (only_mine and got != listed(mine)) or problems:
        diagnosis = "; ".join(problems) or "it differs from the list the spec asks for (§5.4, §6.1)"
        raise Failure(Exchange(client.session.last_sent, expected, show(got, LIST_SHOWN), diagnosis))
    return Exchange(client.session.last_sent, expected, show(got, LIST_SHOWN))


# -- §3.1 Unique nicknames --------------------------------------------------------


def taken_first_line(spell: Callable[[str], str], session: Session) -> Exchange:
    """Refuse a first line another client holds; the holder keeps its name, and a retry works."""
    names = Names()
    holder = session.join(names.of("Holder"))
    newcomer = session.connect(names.of("newcomer"))
    exchange = newcomer.ask(spell(holder.name).encode("ascii"), NICKNAME_TAKEN)
    newcomer.ask(nick(newcomer), MATCHED_TO + nick(holder))
    holder.expect(MATCHED_TO + nick(newcomer))
    return exchange


for _id, _spell, _title in (
    ("nickname-taken", str, "a first line that another client holds as its nickname"),
    ("nickname-taken-any-case", str.swapcase, "a first line that another client holds in another case"),
):
    _taken = functools.partial(taken_first_line, _spell)
    add(Check(_id, FEATURE, "§3.1", f"{_title} gets #nickname_taken", _taken, Stage.PAIR))


@check(
    "rename-taken", "§3.1", "/nickname to a name held in another case gets #nickname_taken; nothing changes"
)
def rename_taken(session: Session) -> Exchange:
    """Refuse a rename to a name another holds: the partner hears nothing, every name stays as it was."""
    names = Names()
    alice, bob, carol = trio(session, names)
    bob.send(b"/nickname " + nick(carol).swapcase())
    exchange = refused_once(bob, alice, NICKNAME_TAKEN)
    bob.send(b"/who " + names.pattern())
    expect_online(bob, [alice.name, bob.name, carol.name])
    return exchange


# -- §5.4 /who and §6.1 lists ----------------------------------------------------------


@check("who-lists-asker", "§5.4", "/who while waiting lists the asker itself", Stage.WAIT)
def who_lists_asker(session: Session) -> Exchange:
    """Count the asker among the named clients: a lone client finds itself."""
    names = Names()
    solo = session.join(names.of("solo"))
    solo.send(b"/who " + names.pattern())
    return expect_online(solo, [solo.name])


@check("who-everyone", "§5.4", "/who with no pattern lists every named client, sorted, the asker included")
def who_everyone(session: Session) -> Exchange:
    """List everyone named on the server; others may be there too, so hold the list to its rules."""
    names = Names()
    alice, bob = session.pair(names.of("alice"), names.of("Bob"))
    alice.send(b"/who")
    exchange = expect_online(alice, [alice.name, bob.name], only_mine=False)
    still_chatting(alice, bob)
    return exchange


@check(
    "who-sorted", "§6.1", "/who while chatting lists names sorted case-insensitively, and nothing is relayed"
)
def who_sorted(session: Session) -> Exchange:
    """Sort as if all were in one case: alice, Bob, carol, Dave; neither the joining nor the ASCII order."""
    names = Names()
    carol, bob = session.pair(names.of("carol"), names.of("Bob"))
    alice, dave = session.pair(names.of("alice"), names.of("Dave"))
    bob.send(b"/who " + names.pattern())
    exchange = expect_online(bob, [alice.name, bob.name, carol.name, dave.name])
    still_chatting(bob, carol)
    return exchange


@check("who-any-case", "§6.1", "a /who pattern matches nicknames in any case", Stage.PAIR)
def who_any_case(session: Session) -> Exchange:
    """Match 'QZKFW-b*' with 'qzkfw-Bob': case counts for neither the tag nor the role."""
    names = Names()
    alice, bob = session.pair(names.of("alice"), names.of("Bob"))
    alice.send(b"/who " + names.tag.upper().encode("ascii") + b"-b*")
    return expect_online(alice, [bob.name])


def three_prefixes(session: Session, names: Names) -> Tuple[Client, Client, Client]:
    """Name three clients 'a', 'ab' and 'abc' after the tag, for the wildcards."""
    a, ab = session.pair(names.of("a"), names.of("ab"))
    return a, ab, session.join(names.of("abc"))


@check("who-question-mark", "§6.1", "'?' in a /who pattern stands for exactly one character", Stage.PAIR)
def who_question_mark(session: Session) -> Exchange:
    """Match 'a?' with 'ab' alone: not 'a' (no character) nor 'abc' (two)."""
    names = Names()
    a, ab, _ = three_prefixes(session, names)
    a.send(b"/who " + names.pattern("a?"))
    return expect_online(a, [ab.name])


@check(
    "who-star", "§6.1", "'*' in a /who pattern stands for any run of characters, none included", Stage.PAIR
)
def who_star(session: Session) -> Exchange:
    """Match 'ab*' with 'ab' and 'abc', not with 'a'."""
    names = Names()
    a, ab, abc = three_prefixes(session, names)
    a.send(b"/who " + names.pattern("ab*"))
    return expect_online(a, [ab.name, abc.name])


@check("who-bracket", "§6.1", "'[' in a /who pattern is itself, not the start of a set", Stage.PAIR)
def who_bracket(session: Session) -> Exchange:
    """Match '[ab]' with the nickname that holds '[ab]', not with 'a' as fnmatch's set would."""
    names = Names()
    bracket, plain = session.pair(names.of("[ab]"), names.of("a"))
    plain.send(b"/who " + names.pattern("[ab]"))
    return expect_online(plain, [bracket.name])


@check("who-no-match", "§6.1", "/who with a pattern nobody matches gets #online_0", Stage.WAIT)
def who_no_match(session: Session) -> Exchange:
    """Answer a pattern that matches nobody with a count of 0 and no names."""
    names = Names()
    solo = session.join(names.of("solo"))
    solo.send(b"/who " + names.pattern("nobody*"))
    return expect_online(solo, [])


@check(
    "who-cut", "§6.1", f"/who with {CUT_CLIENTS} matches shows as many as fit in a line and counts them all"
)
def who_cut(session: Session) -> Exchange:
    """Cut a long list at the last name that fits in 2000 octets; the count still counts every match."""
    names = Names()
    nicknames = [cut_name(names, number) for number in range(CUT_CLIENTS)]
    nicknames.reverse()  # join out of order, so that an unsorted list shows
    clients: List[Client] = []
    for first, second in zip(nicknames[::2], nicknames[1::2]):
        clients.extend(session.pair(first, second))
    asker = clients[0]
    asker.send(b"/who " + names.pattern())
    return expect_online(asker, nicknames)


def cut_name(names: Names, number: int) -> str:
    """Return a 30-character nickname, the filler's case alternating, so ASCII order is not the order."""
    filler = ("X" if number % 2 else "x") * (MAX_NICKNAME_CHARS - len(names.of("")) - 2)
    return names.of(f"{filler}{number:02d}")


# -- §5.5 /msg ---------------------------------------------------------------------


@check(
    "msg-delivered", "§5.5", "/msg from a chat reaches the one client named, and the sender gets #sent_to_"
)
def msg_delivered(session: Session) -> Exchange:
    """Deliver a direct message to the waiter it names: not to the sender's partner, not back."""
    alice, bob, carol = trio(session, Names())
    alice.ask(b"/msg " + nick(carol) + b" hello carol", wire(Notice.SENT_TO, nick(carol)))
    still_chatting(alice, bob)
    return carol.expect(direct(alice, b"hello carol"))


@check("msg-while-waiting", "§5.5", "/msg while waiting reaches a client in a chat; the sender still waits")
def msg_while_waiting(session: Session) -> Exchange:
    """Let a waiter write to someone who chats; the partner hears nothing, the waiter keeps its place."""
    names = Names()
    alice, bob, carol = trio(session, names)
    carol.ask(b"/msg " + nick(alice) + b" from the queue", wire(Notice.SENT_TO, nick(alice)))
    exchange = alice.expect(direct(carol, b"from the queue"))
    still_chatting(alice, bob)
    session.meet(carol, names.of("dave"))
    return exchange


@check("msg-any-case", "§5.5", "/msg NICK matches in any case, and #sent_to_ spells NICK as its owner does")
def msg_any_case(session: Session) -> Exchange:
    """Find the recipient in any case; the receipt uses the spelling its owner chose."""
    alice, bob, carol = trio(session, Names())
    alice.ask(b"/msg " + nick(carol).swapcase() + b" any case", wire(Notice.SENT_TO, nick(carol)))
    still_chatting(alice, bob)
    return carol.expect(direct(alice, b"any case"))


@check(
    "msg-no-such-user", "§5.5", "/msg to nobody gets #no_such_user_ with NICK as written, and reaches nobody"
)
def msg_no_such_user(session: Session) -> Exchange:
    """Answer a message for a nickname nobody holds, once, spelling it as the sender did."""
    names = Names()
    alice, bob = session.pair(names.of("alice"), names.of("Bob"))
    nobody = names.pattern("NoBody")
    alice.send(b"/msg " + nobody + b" hello?")
    return refused_once(alice, bob, wire(Notice.NO_SUCH_USER, nobody))


@check(
    "msg-to-self", "§5.5", "/msg to yourself: #from_ and #sent_to_ to the sender, in either order", Stage.WAIT
)
def msg_to_self(session: Session) -> Exchange:
    """Deliver a note to oneself; a line sent after it, answered #wait, fences off anything more."""
    solo = session.join(Names().of("solo"))
    solo.send(b"/msg " + nick(solo) + b" note to self", b"fence")
    exchange = expect_in_any_order(solo, [direct(solo, b"note to self"), wire(Notice.SENT_TO, nick(solo))])
    solo.expect(WAIT)  # §7.2: the fence, a message while waiting
    return exchange


@check("msg-text-hash-slash", "§5.5", "a /msg text may start with '#' or '/', and arrives as it was written")
def msg_text_hash_slash(session: Session) -> Exchange:
    """Carry a text that looks like a notice or a command verbatim; '/quit' in a text quits nobody."""
    names = Names()
    alice, bob, carol = trio(session, names)
    alice.send(b"/msg " + nick(carol) + b" #not a notice", b"/msg " + nick(carol) + b" /quit")
    for _ in range(2):
        alice.expect(wire(Notice.SENT_TO, nick(carol)))
    still_chatting(alice, bob)
    carol.expect(direct(alice, b"#not a notice"))
    exchange = carol.expect(direct(alice, b"/quit"))
    session.meet(carol, names.of("dave"))
    return exchange


# -- §5.6 /all and §9.7 its rate ------------------------------------------------------


@check(
    "all-delivered", "§5.6", "/all reaches every other named client, and the sender gets #broadcast_N only"
)
def all_delivered(session: Session) -> Exchange:
    """Send /all to the partner and the waiter alike; the sender gets a count, never its own line."""
    alice, bob, carol = trio(session, Names())
    alice.send(b"/all hello everyone")
    expect_recipients(alice, 2)
    bob.expect(broadcast(alice, b"hello everyone"))
    exchange = carol.expect(broadcast(alice, b"hello everyone"))
    still_chatting(alice, bob)  # an echo after the count would come before bob's marker
    return exchange


@check("all-while-waiting", "§5.6", "/all while waiting reaches both sides of a chat; the sender still waits")
def all_while_waiting(session: Session) -> Exchange:
    """Let a waiter send /all; it keeps its place, and its next line is its match, not an echo."""
    names = Names()
    alice, bob, carol = trio(session, names)
    carol.send(b"/all from the queue")
    exchange = expect_recipients(carol, 2)
    for reader in (alice, bob):
        reader.expect(broadcast(carol, b"from the queue"))
    session.meet(carol, names.of("dave"))
    return exchange


@check("all-skips-unnamed", "§5.6", "/all does not reach a client that has no nickname yet")
def all_skips_unnamed(session: Session) -> Exchange:
    """Send /all to named clients only: a client still choosing its name next reads its #wait."""
    names = Names()
    early = session.connect(names.of("early"))
    alice, bob = session.pair(names.of("alice"), names.of("Bob"))
    alice.send(b"/all not for early")
    expect_recipients(alice, 1)
    bob.expect(broadcast(alice, b"not for early"))
    return early.ask(nick(early), WAIT)


@check("all-text-hash-slash", "§5.6", "an /all text may start with '#' or '/', and arrives as it was written")
def all_text_hash_slash(session: Session) -> Exchange:
    """Carry texts that look like a notice or a command verbatim, one /all from each side of a chat."""
    alice, bob, carol = trio(session, Names())
    for sender, text, readers in ((alice, b"#not a notice", (bob, carol)), (bob, b"/quit", (alice, carol))):
        sender.send(b"/all " + text)
        expect_recipients(sender, 2)
        for reader in readers:
            exchange = reader.expect(broadcast(sender, text))
    still_chatting(alice, bob)
    return exchange


@check("all-rate-limited", "§9.7", "a second /all within a second gets #rate_limited (the default rate)")
def all_rate_limited(session: Session) -> Exchange:
    """Refuse the second of two /all sent in one write, and send it to nobody."""
    names = Names()
    alice, bob = session.pair(names.of("alice"), names.of("Bob"))
    alice.send(b"/all first", b"/all second")
    expect_recipients(alice, 1)
    exchange = alice.expect(RATE_LIMITED)
    bob.expect(broadcast(alice, b"first"))
    still_chatting(alice, bob)  # 'second' would come before alice's marker
    return exchange


# -- §5.7 /next -------------------------------------------------------------------------


@check(
    "next-in-chat",
    "§5.7",
    "/next: the partner gets #user_quit and is closed, the sender waits again",
    Stage.PAIR,
)
def next_in_chat(session: Session) -> Exchange:
    """End the chat as /quit would for the partner; with nobody waiting, the sender gets #wait."""
    names = Names()
    alice, bob = session.pair(names.of("alice"), names.of("Bob"))
    alice.send(b"/next")
    exchange = expect_after_next(alice, WAIT, bob)
    bob.expect(USER_QUIT)
    bob.expect(CLOSED)
    session.meet(alice, names.of("carol"))
    return exchange


@check("next-meets-waiter", "§5.7", "/next meets the client that waits, never the old partner")
def next_meets_waiter(session: Session) -> Exchange:
    """Pair the sender of /next with the waiter at once; the old partner is told and closed."""
    alice, bob, carol = trio(session, Names())
    alice.send(b"/next")
    exchange = expect_after_next(alice, MATCHED_TO + nick(carol), bob)
    carol.expect(MATCHED_TO + nick(alice))
    bob.expect(USER_QUIT)
    bob.expect(CLOSED)
    still_chatting(alice, carol)
    return exchange


@check(
    "next-while-waiting",
    "§5.7",
    "/next while waiting gets #wait and keeps the place in the queue",
    Stage.PAIR,
)
def next_while_waiting(session: Session) -> Exchange:
    """Answer a waiter's /next with #wait; the next newcomer still meets it."""
    names = Names()
    carol = session.join(names.of("carol"))
    exchange = carol.ask(b"/next", WAIT)
    session.meet(carol, names.of("dave"))
    return exchange


def expect_after_next(sender: Client, expected: bytes, old_partner: Client) -> Exchange:
    """Read the answer to /next; a match with the partner just left is named as such (§5.7)."""
    got = sender.read_line()
    if got == expected:
        return Exchange(sender.session.last_sent, f"{sender.name} gets {show(expected)}", show(got))
    exchange = sender.judged(expected, got)
    if got == MATCHED_TO + nick(old_partner):
        again = f"{sender.name} was matched again with {old_partner.name}, the partner it left with /next"
        exchange = exchange._replace(diagnosis=f"{again}: that partner is closed, never queued (§5.7)")
    raise Failure(exchange)


# -- Malformed commands, and commands before a nickname ---------------------------------


def malformed_in_chat(line: bytes, session: Session) -> Exchange:
    """Refuse a malformed command once with #invalid_command; nothing reaches the partner it names."""
    names = Names()
    alice, bob = session.pair(names.of("alice"), names.of("Bob"))
    alice.send(line.replace(b"{partner}", nick(bob)))
    return refused_once(alice, bob, INVALID_COMMAND)


MALFORMED = [
    ("msg-alone", "§5.5", "'/msg' alone", b"/msg"),
    ("msg-no-text", "§5.5", "'/msg NICK' with no text", b"/msg {partner}"),
    ("msg-empty-text", "§5.5", "'/msg NICK ' with an empty text", b"/msg {partner} "),
    ("msg-bad-nickname", "§5.5", "'/msg' to a 31-character nickname", b"/msg " + NICK_31 + b" hello"),
    (
        "msg-control-text",
        "§5.5",
        "'/msg NICK' with a control character in the text",
        b"/msg {partner} bell\x07",
    ),
    ("all-alone", "§5.6", "'/all' alone", b"/all"),
    ("all-empty-text", "§5.6", "'/all ' with an empty text", b"/all "),
    ("who-empty-pattern", "§6.1", "'/who ' with an empty pattern", b"/who "),
    ("next-argument", "§5.7", "'/next now' (/next takes nothing)", b"/next now"),
]
for _id, _section, _what, _line in MALFORMED:
    _title = f"{_what} gets #invalid_command and reaches nobody"
    add(Check(_id, FEATURE, _section, _title, functools.partial(malformed_in_chat, _line)))


def before_nickname(line: bytes, session: Session) -> Exchange:
    """Refuse a protocol 2 command before a nickname, then let the client choose one (§7.1)."""
    newcomer = session.connect(Names().of("newcomer"))
    exchange = newcomer.ask(line, INVALID_COMMAND)
    newcomer.ask(nick(newcomer), WAIT)
    return exchange


def add_before_nickname(feature: str, lines: List[Tuple[str, bytes]]) -> None:
    """Register, for ``feature``, a check that each (id, line) is refused before a nickname (§7.1)."""
    for name, line in lines:
        title = f"{show(line)} before a nickname gets #invalid_command, and a retry works"
        add(Check(name, feature, "§7.1", title, functools.partial(before_nickname, line), Stage.WAIT))


add_before_nickname(
    FEATURE,
    [
        ("who-before-nickname", b"/who"),
        ("msg-before-nickname", b"/msg somebody hello"),
        ("all-before-nickname", b"/all hello"),
        ("next-before-nickname", b"/next"),
    ],
)
