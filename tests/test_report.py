"""The kit's reports round-trip through the parsers graders use: json, an XML parser, Gradescope's keys.

Each test grades a real server (a student server with one planted
mistake, so the report holds a PASS, a FAIL with its diagnosis and, where
the preflight fails, SKIPs), renders it, parses it back, and checks that
the parsed report says what the run found.
"""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any, Iterator, List, Optional

import pytest

from mechat.conform import preflight, registry, report, runner
from mechat.conform.report import Grading
from tests.ports import refusing_port
from tests.student_server import serving

ROOT = Path(__file__).resolve().parent.parent

#: A hang detector: these servers answer every line at once.
TIMEOUT = 15.0

#: Two checks that pass on a server that keeps the CR, and two that fail on it.
CHOSEN = ["two-lines-in-one-write", "quit-in-chat", "crlf-message", "crlf-nickname"]


def strict_json(text: str) -> Any:
    """Parse JSON as its strictest readers do: NaN and Infinity are not JSON (RFC 8259)."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def grade(mistakes: List[str], ids: List[str], weights: Optional[report.Weights] = None) -> Grading:
    """Grade a student server with ``mistakes`` on the checks ``ids``."""
    with serving(*mistakes) as port:
        address = ("127.0.0.1", port)
        flight = preflight.run(address, TIMEOUT)
        results = list(runner.run_all(address, TIMEOUT, registry.select(["core"], ids), flight))
    return Grading(address, flight, results, 1.5, weights or {})


@pytest.fixture(scope="module")
def keeps_cr() -> Iterator[Grading]:
    """The report on a server that keeps the CR of CR LF: two checks pass, two fail."""
    yield grade(["keeps-cr"], CHOSEN, {"§2": 2.0, "crlf-nickname": 5.0})


@pytest.fixture(scope="module")
def crlf_out() -> Iterator[Grading]:
    """The report on a server that ends its lines in CR LF: the preflight fails, every check is skipped."""
    yield grade(["crlf-out"], CHOSEN)


def test_json_holds_one_object_per_check(keeps_cr: Grading) -> None:
    """--format json: every check with id, section, title, status, sent, expected, got and diagnosis."""
    document = strict_json(report.as_json(keeps_cr))
    checks = {check["id"]: check for check in document["checks"]}
    assert sorted(checks) == sorted(CHOSEN)
    assert {check["status"] for check in checks.values()} == {"PASS", "FAIL"}
    failed = checks["crlf-message"]
    assert failed["section"] == "§2.2" and failed["status"] == "FAIL"
    assert failed["sent"] == "alice: 'sent with CRLF\\r\\n'"
    assert failed["expected"] == "bob gets 'sent with CRLF'"
    assert failed["got"] == "'sent with CRLF\\r'"
    assert failed["diagnosis"].startswith("your server kept the CR of a CR LF line end")
    assert checks["quit-in-chat"]["diagnosis"] is None
    assert (document["passed"], document["failed"], document["skipped"]) == (2, 2, 0)
    assert document["preflight"] == {"status": "PASS", "reached": "relay", "explanation": None}


def test_weights_score_each_check_by_id_then_section_then_one(keeps_cr: Grading) -> None:
    """--weights: an id beats its section, a section covers its subsections, anything else is worth 1."""
    points = {check["id"]: check["max_points"] for check in strict_json(report.as_json(keeps_cr))["checks"]}
    assert points == {"two-lines-in-one-write": 2, "crlf-message": 2, "crlf-nickname": 5, "quit-in-chat": 1}
    assert (keeps_cr.score(), keeps_cr.max_score()) == (3, 10)
    assert report.summary(keeps_cr) == "4 checks: 2 passed, 2 failed; score 3 of 10"


def test_junit_parses_with_counts_that_match(keeps_cr: Grading, crlf_out: Grading) -> None:
    """--format junit: one testcase per check plus the preflight, failures and skips counted right."""
    root = ElementTree.fromstring(report.as_junit(keeps_cr))
    cases = root.findall("./testsuite/testcase")
    failures = [case for case in cases if case.find("failure") is not None]
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("5", "2", "0")
    assert len(cases) == 5
    assert sorted(case.get("name", "").rsplit("[", 1)[1] for case in failures) == [
        "crlf-message]",
        "crlf-nickname]",
    ]
    message = failures[0].find("failure")
    assert message is not None and "(§2.2" in message.get("message", "")
    skipped = ElementTree.fromstring(report.as_junit(crlf_out))
    assert (skipped.get("failures"), skipped.get("skipped")) == ("1", "4")
    preflight_failure = skipped.find("./testsuite/testcase[@name='preflight']/failure")
    assert preflight_failure is not None
    assert "ends its lines with CR LF" in preflight_failure.get("message", "")


#: The keys Gradescope documents for results.json, at the top and per test.
GRADESCOPE_TOP = {"score", "execution_time", "output", "output_format", "tests"}
GRADESCOPE_TEST = {"name", "score", "max_score", "status", "output"}


def test_gradescope_results_have_the_documented_keys(keeps_cr: Grading, crlf_out: Grading) -> None:
    """--format gradescope: score is the sum of the tests' scores; statuses are passed or failed."""
    for grading in (keeps_cr, crlf_out):
        document = strict_json(report.as_gradescope(grading))
        assert set(document) >= GRADESCOPE_TOP
        assert all(set(test) >= GRADESCOPE_TEST for test in document["tests"])
        assert {test["status"] for test in document["tests"]} <= {"passed", "failed"}
        assert document["score"] == sum(test["score"] for test in document["tests"])
        assert document["output_format"] == "text"
    skipped = strict_json(report.as_gradescope(crlf_out))
    assert skipped["output"].startswith("PREFLIGHT FAILED")
    assert all(
        test["output"].startswith("the server could not answer a nickname") for test in skipped["tests"]
    )
    failed = [
        test for test in strict_json(report.as_gradescope(keeps_cr))["tests"] if test["status"] == "failed"
    ]
    assert [test["max_score"] for test in failed] == [5.0, 2.0]
    assert all("Likely mistake:" in test["output"] for test in failed)


def test_text_report_opens_with_the_preflight_when_it_failed(crlf_out: Grading) -> None:
    """--format text: the preflight's paragraph, one line per check, the summary."""
    lines = report.as_text(crlf_out).splitlines()
    assert lines[0].startswith("PREFLIGHT FAILED: the server could not answer a nickname with #wait.")
    assert [line.split()[0] for line in lines[1:-1]] == ["SKIP"] * 4
    assert lines[-1] == "4 checks: 0 passed, 0 failed, 4 skipped"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[1, 2]", "expected a JSON object"),
        ("{", "not JSON"),
        ('{"§x": 1}', "'§x' is neither a check id nor a section"),
        ('{"no-such-check": 1}', "'no-such-check' is neither a check id nor a section"),
        ('{"§2": -1}', "the weight of '§2' must be a number of points from 0 to 1,000,000, not -1"),
        ('{"§2": true}', "the weight of '§2' must be a number of points"),
        ('{"§2": NaN}', "the weight of '§2' must be a number of points from 0 to 1,000,000, not nan"),
        ('{"§2": Infinity}', "the weight of '§2' must be a number of points from 0 to 1,000,000, not inf"),
        ('{"§2": 1' + "0" * 400 + "}", "the weight of '§2' must be a number of points from 0 to 1,000,000"),
        ('{"§2.9": 1}', "no check is in section §2.9"),
    ],
)
def test_a_bad_weights_file_is_refused_with_the_reason(text: str, problem: str) -> None:
    """A weights file that cannot be meant is an error that says why, never a silent default."""
    with pytest.raises(ValueError, match="^" + problem.replace("(", r"\(")):
        report.load_weights(text)


def test_only_takes_ids_and_sections() -> None:
    """--only: an id picks one check; a section picks every check in it and in its subsections."""
    assert [check.id for check in registry.select(["core"], ["quitnow"])] == ["quitnow"]
    in_section_2 = registry.select(["core"], ["§2"])
    assert {check.section for check in in_section_2} == {"§2.1", "§2.2", "§2.3", "§2.4"}
    assert registry.select(["core"], ["§2.1"]) == [check for check in in_section_2 if check.section == "§2.1"]
    with pytest.raises(ValueError, match=r"no check of the features core has the id or section '§2\.9'"):
        registry.select(["core"], ["§2.9"])
    with pytest.raises(ValueError, match="no checks chosen"):
        registry.select([])


def run_command(*arguments: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    """Run ``python -m mechat conform`` with ``arguments``."""
    command = [sys.executable, "-m", "mechat", "conform", *arguments]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}  # this mechat, from any directory
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=120)


def test_list_prints_every_check_without_connecting() -> None:
    """--list needs no server: one line per check, id first, in spec order."""
    finished = run_command("--list")
    ids = [line.split()[0] for line in finished.stdout.splitlines()]
    assert finished.returncode == 0
    assert ids == [check.id for check in registry.select(["core"])]


def test_output_file_gets_the_report_and_stdout_the_summary(tmp_path: Path) -> None:
    """--output FILE: the report goes to the file, stdout keeps the summary line, the exit status stays."""
    weights = tmp_path / "weights.json"
    weights.write_text('{"§2.2": 3}')
    with serving("keeps-cr") as port:
        finished = run_command(
            "--port", str(port), "--only", "§2.2", "--format", "gradescope", "--output", "results.json",
            "--weights", str(weights), cwd=tmp_path,
        )  # fmt: skip
    assert finished.stdout == "3 checks: 0 passed, 3 failed; score 0 of 9\n", finished.stderr
    assert finished.returncode == 1
    document = strict_json((tmp_path / "results.json").read_text())
    assert len(document["tests"]) == 3 and document["score"] == 0 and document["tests"][0]["max_score"] == 3
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results.json", "weights.json"]


def test_a_run_that_grades_nothing_leaves_the_last_report_alone(tmp_path: Path) -> None:
    """--output FILE is replaced only by a finished report: an unreachable server leaves the old one."""
    report = tmp_path / "results.json"
    report.write_text("the last report")
    with refusing_port() as port:
        finished = run_command("--port", str(port), "--output", str(report))
    assert finished.returncode == 2
    assert report.read_text() == "the last report"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results.json"]


def test_bad_options_are_one_line_errors_with_exit_2(tmp_path: Path) -> None:
    """An unknown check, feature or weights file is named on stderr, with no traceback."""
    unknown = run_command("--list", "--only", "nope")
    assert unknown.returncode == 2
    assert unknown.stderr.splitlines()[-1] == (
        "mechat conform: error: no check of the features core has the id or section 'nope'"
        " (mechat conform --list shows them)"
    )
    unwritable = run_command("--port", "1", "--output", str(tmp_path / "no" / "such" / "dir.json"))
    assert unwritable.returncode == 2
    assert unwritable.stderr.splitlines()[-1].startswith("mechat conform: error: cannot write the report to ")
    nothing = run_command("--port", "1", "--features", "")
    assert nothing.returncode == 2
    assert "no checks chosen" in nothing.stderr
    missing = run_command("--list", "--weights", str(tmp_path / "none.json"))
    assert missing.returncode == 2
    assert missing.stderr.splitlines()[-1].startswith("mechat conform: error: cannot read ")
    feature = run_command("--list", "--features", "core,telepathy")
    assert feature.stderr.splitlines()[-1] == (
        "mechat conform: error: unknown feature 'telepathy';"
        " the features are core, directory, rooms, room-limits, accounts"
    )
    assert "Traceback" not in unknown.stderr + missing.stderr + feature.stderr + unwritable.stderr
