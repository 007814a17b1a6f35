"""The kit names the classic mistakes of student servers, each shown on a server that makes it.

Each test runs the kit against :mod:`tests.student_server` with one mistake
switched on, and pins the sentence the kit must print, in full, where the
mistake first shows: in the preflight, or in the check of its clause.
A mistake-free student server passes the same checks, so each sentence
comes from the mistake and not from the student server.
"""

from typing import Any, Dict, List, Optional

import pytest

from mechat.conform import preflight, registry, runner
from mechat.conform.clients import Client, Failure, Session
from mechat.conform.diagnose import CLOSED, WAIT, Evidence, Outcome, explain
from tests.student_server import serving

#: Seconds the kit waits for a line.  Where silence is the mistake (no LF,
#: no #wait), this is how long the test waits, once; everywhere else the
#: server answers at once, and this is only a hang detector.  The kit's
#: default, so that these tests show the kit as a student runs it.
TIMEOUT = runner.DEFAULT_TIMEOUT

#: For each mistake seen in the preflight: the diagnosis, whole.
PREFLIGHT_DIAGNOSES = {
    "no-lf": "got '#wait#matched_to_bob' with no LF after it: every line ends in LF (§2.1); "
    "'#wait#matched_to_bob' is two notices with no LF between them: end each line with LF (§2.1, §6)",
    "glued-notices": "got '#wait#matched_to_bob' with no LF after it: every line ends in LF (§2.1); "
    "'#wait#matched_to_bob' is two notices with no LF between them: end each line with LF (§2.1, §6)",
    "crlf-out": "your server ends its lines with CR LF: end every line it sends with LF alone (§2.1)",
    "echo": "alice got back its own line 'preflight line from alice': your server echoes lines to their"
    " sender; relay each line to the partner only (§7.3)",
    "recv-is-line": "your server answered 'first of two\\nsecond of two\\n', 2 lines in one write, with"
    " #invalid_message: it may take each recv() as one message; cut lines at each LF instead (§2.1)",
    "ignores-eof": "early hung up (end of file) and your server kept the connection open, or never read from"
    " it: when recv() returns no bytes the client has gone, so close the connection (§8)",
    "one-at-a-time": "bob got no answer at all while alice was connected: your server may serve one client"
    " at a time; serve each connection in a thread of its own, or with select() (§7.1)",
    "no-wait": "alice was never told #wait, but was matched when bob came: a client with nobody to meet"
    " must be told #wait at once (§7.1)",
}


@pytest.mark.parametrize("mistake", sorted(PREFLIGHT_DIAGNOSES))
def test_preflight_names_the_mistake(mistake: str) -> None:
    """§2.1, §6, §7.1, §7.3: the preflight stops at the first wrong reply and names the mistake behind it."""
    with serving(mistake) as port:
        flight = preflight.run(("127.0.0.1", port), TIMEOUT)
    assert flight.failure is not None
    assert flight.failure.diagnosis == PREFLIGHT_DIAGNOSES[mistake]


def test_a_correct_student_server_passes_the_preflight() -> None:
    """The student server without mistakes gets through every step: the diagnoses above are the mistakes'."""
    with serving() as port:
        flight = preflight.run(("127.0.0.1", port), TIMEOUT)
    assert flight == preflight.Preflight(registry.Stage.RELAY)


#: For each mistake that the preflight cannot see: the check that shows it, and its diagnosis.
CHECK_DIAGNOSES = {
    "recv-is-line": [
        (
            "two-lines-in-one-write",
            "your server answered 'first of two\\nsecond of two\\n', 2 lines in one write, with"
            " #invalid_message: it may take each recv() as one message; cut lines at each LF instead (§2.1)",
        ),
    ],
    "keeps-cr": [
        (
            "crlf-nickname",
            "your server answered 'carol\\r\\n' with #invalid_nickname: it may keep the CR as part of the"
            " nickname (§2.2, §3)",
        ),
        (
            "crlf-quit",
            "your server answered '/quit\\r\\n' with #invalid_command: it may keep the CR as part of the"
            " command (§2.2, §5.3)",
        ),
        (
            "crlf-message",
            "your server kept the CR of a CR LF line end: drop a CR that comes just before the LF (§2.2)",
        ),
    ],
    "closes-on-refusal": [
        (
            "nickname-empty",
            "your server closed newcomer after '#invalid_nickname': a refused line leaves the connection"
            " open, so the client can try again (§7)",
        ),
        (
            "message-hash",
            "your server ended the chat of alice after '#invalid_message': a refused line leaves the"
            " connection open, so the client can try again (§7)",
        ),
    ],
}


def diagnosis_of(check_id: str, port: int) -> Optional[str]:
    """Run one check against the server at ``port``; return its diagnosis, or None if it passed."""
    result = runner.run_check(registry.by_id()[check_id], ("127.0.0.1", port), TIMEOUT, nicknames_work=True)
    return None if result.passed or result.exchange is None else result.exchange.diagnosis


@pytest.mark.parametrize(
    "mistake, check_id, diagnosis",
    [
        (mistake, check_id, diagnosis)
        for mistake, cases in CHECK_DIAGNOSES.items()
        for check_id, diagnosis in cases
    ],
)
def test_check_names_the_mistake(mistake: str, check_id: str, diagnosis: str) -> None:
    """§2.1, §2.2, §7: a check that fails on a classic mistake names it; without the mistake it passes."""
    with serving(mistake) as port:
        assert diagnosis_of(check_id, port) == diagnosis
    with serving() as port:
        assert diagnosis_of(check_id, port) is None


def test_half_a_line_taken_as_a_line_is_named() -> None:
    """§2.1: a server that relays what one recv() returned relays the first piece of a line as a line.

    The kit's own check sends the pieces 50 ms apart, and a busy server may
    read two at once; here only the first piece is ever sent, so the
    server's recv() cannot see more than that.
    """
    with serving("recv-is-line") as port, Session(("127.0.0.1", port), TIMEOUT) as session:
        alice, bob = session.pair()
        alice.send_raw(b"one line ", "'one line '")
        with pytest.raises(Failure) as failure:
            bob.expect(b"one line in two pieces")
    assert failure.value.exchange.diagnosis == (
        "bob got 'one line ', only the start of the line: your server may take each recv() as a whole"
        " line; keep reading until the LF (§2.1)"
    )


def test_seed_server_is_graded_fast_and_told_about_the_lf(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed's C server (no LF out, the LF kept in): named in the preflight, graded with few timeouts.

    The run time is counted in timeouts waited out, not in seconds: at the
    default timeout, three are 15 s, inside the 30 s an autograder can spend.
    """
    silences: List[str] = []
    wait_out = Client.silence

    def counted(client: Client) -> Outcome:
        silences.append(client.name)
        return wait_out(client)

    monkeypatch.setattr(Client, "silence", counted)
    with serving("no-lf", "keeps-lf") as port:
        flight = preflight.run(("127.0.0.1", port), TIMEOUT)
        results = list(runner.run_all(("127.0.0.1", port), TIMEOUT, registry.select(["core"]), flight))
    assert len(silences) <= 3, silences
    assert flight.failure is not None
    assert flight.failure.diagnosis == (
        "got '#invalid_nickname' with no LF after it: every line ends in LF (§2.1); your server answered"
        " 'alice\\n' with #invalid_nickname: it may be reading the LF as part of the nickname (§2.1, §3)"
    )
    statuses = {result.check.id: result.status for result in results}
    assert statuses.pop("quit-before-nickname") is runner.Status.FAIL
    assert set(statuses.values()) == {runner.Status.SKIP}


def evidence(**fields: Any) -> Evidence:
    """Return the evidence of alice expecting 'hello' and getting nothing, with ``fields`` changed."""
    silence = Outcome("<nothing within 5 s>", Outcome.SILENCE)
    base = Evidence("alice", b"hello", silence, b"", None, b"", b"", frozenset(), (), True)
    return base._replace(**fields)


@pytest.mark.parametrize(
    "fields, diagnosis",
    [
        # A whole wrong line came; bytes after it are the next line on its way, not a missing LF (§2.1).
        ({"got": b"hullo", "unterminated": b"next li"}, ""),
        # Bytes without LF, then a close: the LF is what is missing, not the line (§2.1, §8).
        (
            {"expected": b"#user_quit", "got": CLOSED, "unterminated": b"#user_quit"},
            "got '#user_quit' with no LF after it: every line ends in LF (§2.1)",
        ),
        (
            {"expected": b"#user_quit", "got": CLOSED},
            "alice was closed without #user_quit: tell the partner before closing it (§8)",
        ),
        # Silence where #wait was due, after a message while waiting (§7.2).
        (
            {"expected": WAIT, "own_write": b"anyone there?\n"},
            "alice got no answer to 'anyone there?\\n': a client with nobody to meet is told #wait at once,"
            " after its nickname and after each line it sends while it waits (§7.1, §7.2)",
        ),
        # 'alice' and its LF were accepted, so a refused name is refused for another reason (§3).
        ({"expected": WAIT, "got": b"#invalid_nickname", "own_write": b"Q\n"}, ""),
        (
            {"expected": WAIT, "got": b"#invalid_nickname", "own_write": b"Q\n", "nicknames_work": False},
            "your server answered 'Q\\n' with #invalid_nickname: it may be reading the LF as part of the"
            " nickname (§2.1, §3)",
        ),
        # /quit left the connection open (§5.1).
        (
            {"expected": CLOSED, "own_write": b"/quit\n", "last_write": b"/quit\n"},
            "your server kept alice's connection open after '/quit\\n': close it (§5.1, §8)",
        ),
        # The partner of a client that quit was told, and not closed: its own nickname is not to blame (§8).
        (
            {
                "expected": CLOSED,
                "own_write": b"alice\n",
                "last_write": b"/quit\n",
                "last_read": b"#user_quit",
            },
            "your server told alice #user_quit and kept its connection open: close it too (§8)",
        ),
        # The server does not keep the LF (the preflight's 'alice' was accepted): /quit is refused otherwise.
        ({"got": b"#invalid_command", "last_write": b"/quit\n"}, ""),
    ],
)
def test_each_rule_fires_only_on_its_own_evidence(fields: Dict[str, Any], diagnosis: str) -> None:
    """§2.1, §3, §7, §8: a diagnosis names a mistake only when the evidence shows that mistake."""
    assert explain(evidence(**fields)) == diagnosis
