"""The grading examples of docs/instructors.rst work: their scripts are run here, as the platforms run them.

The page gives instructors an autograder for Gradescope and one for GitHub
Classroom (``docs/examples/``).  These tests run their shell scripts the
way each platform would: ``run_autograder`` in a directory laid out like
Gradescope's ``/autograder``, ``grade.sh`` in a student's checkout.  The
student is :mod:`tests.student_server` with one mistake switched on, run
by a ``run-server`` script as the submission contract asks, so everything
is real: processes, sockets on 127.0.0.1, and the report files, read back
as Gradescope and a JUnit reporter would read them.

The workflow file is GitHub's to run, with actions the suite cannot run;
here only its ``grade.sh`` command lines are checked, against the kit's own
parser.  ``setup.sh`` installs system packages, so it is only parsed.
"""

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import pytest

from mechat import conform
from mechat.__main__ import build_parser
from mechat.conform import core, registry

ROOT = Path(__file__).resolve().parent.parent
GRADESCOPE = ROOT / "docs" / "examples" / "gradescope"
CLASSROOM = ROOT / "docs" / "examples" / "github-classroom"

#: A mistake that fails a handful of checks, all about CR (§2.2), and passes
#: the rest: 'carol\r' is refused as a nickname, a message is relayed with its CR.
MISTAKE = "keeps-cr"

#: Seconds a script may take, start to finish.  A hang detector, not a
#: clock: a run takes a few seconds, one check of which waits out the kit's
#: 5 s for a /quit that the mistake loses.
SCRIPT_TIMEOUT = 120.0

#: The points the Gradescope example's weights add up to, as the page says.
GRADESCOPE_TOTAL = 100.0

#: The student's run-server: it notes its PID, then becomes the server (exec), keeping that PID.
STUDENT_RUN_SERVER = f"""#!/usr/bin/env bash
echo "$$" > server.pid
exec python3 -m tests.student_server --port "$1" --mistake {MISTAKE}
"""


def free_port() -> int:
    """Return a port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def script_env(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """The environment for a script: this interpreter as its python3, mechat and tests importable."""
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "python3").symlink_to(sys.executable)
    env = {name: value for name, value in os.environ.items() if name != "STARTUP_SECONDS"}
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", os.defpath)])
    env["PYTHONPATH"] = str(ROOT)
    env["PORT"] = str(free_port())
    return env


def write_run_server(directory: Path, text: str = STUDENT_RUN_SERVER) -> None:
    """Put an executable run-server holding ``text`` in ``directory``."""
    run_server = directory / "run-server"
    run_server.write_text(text)
    run_server.chmod(0o755)


def gradescope_root(tmp_path: Path, run_server: Optional[str] = STUDENT_RUN_SERVER) -> Path:
    """Lay out ``tmp_path`` as Gradescope's /autograder: source, submission (with ``run_server``), results."""
    (tmp_path / "source").mkdir()
    shutil.copy(GRADESCOPE / "weights.json", tmp_path / "source" / "weights.json")
    (tmp_path / "submission").mkdir()
    if run_server is not None:
        write_run_server(tmp_path / "submission", run_server)
    (tmp_path / "results").mkdir()
    return tmp_path


def run_script(
    script: Path, env: Mapping[str, str], cwd: Path, *args: str
) -> "subprocess.CompletedProcess[str]":
    """Run ``script`` with ``args`` to the end; return what it did."""
    return subprocess.run(
        [str(script), *args], cwd=cwd, env=env, capture_output=True, encoding="utf-8", timeout=SCRIPT_TIMEOUT
    )


def assert_server_gone(pid_file: Path) -> None:
    """Fail if the process whose PID ``pid_file`` holds still runs, and stop it if so."""
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return
    os.kill(pid, signal.SIGKILL)  # left behind by the script: ours to clean up
    pytest.fail(f"the server (PID {pid}) was still running after the script ended")


def weight(test: Mapping[str, Any], weights: Mapping[str, float]) -> float:
    """Return a test's points by the rule on the page: its id's, else its closest section's, else 1."""
    _feature, section, check_id = test["tags"]
    if check_id in weights:
        return weights[check_id]
    numbers = section.lstrip("§").split(".")
    for length in range(len(numbers), 0, -1):  # §2.2, then §2
        enclosing = "§" + ".".join(numbers[:length])
        if enclosing in weights:
            return weights[enclosing]
    return 1.0


def test_gradescope_autograder_writes_a_graded_results_json(
    tmp_path: Path, script_env: Dict[str, str]
) -> None:
    """run_autograder starts the submission, grades it by weights.json, and stops it again."""
    root = gradescope_root(tmp_path)
    finished = run_script(
        GRADESCOPE / "run_autograder", {**script_env, "AUTOGRADER_ROOT": str(root)}, tmp_path
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert_server_gone(root / "submission" / "server.pid")

    results = json.loads((root / "results" / "results.json").read_text(encoding="utf-8"))
    assert {"score", "tests", "output", "execution_time"} <= results.keys()
    tests: List[Dict[str, Any]] = results["tests"]
    assert len(tests) == len(registry.select([core.FEATURE]))
    for test in tests:
        assert {"name", "score", "max_score", "status", "output"} <= test.keys()
        assert test["status"] in {"passed", "failed"}
        assert test["score"] == (test["max_score"] if test["status"] == "passed" else 0)
    assert results["score"] == sum(test["score"] for test in tests if test["status"] == "passed")

    # The mistake fails the checks about CR, and those only; each failure says why.
    failed = {test["tags"][2]: test for test in tests if test["status"] == "failed"}
    assert "crlf-message" in failed
    assert "your server kept the CR of a CR LF line end" in failed["crlf-message"]["output"]
    assert all("CR" in test["name"] for test in failed.values()), list(failed)

    # max_score comes from weights.json, and the weights add up to what the page says.
    weights = json.loads((GRADESCOPE / "weights.json").read_text(encoding="utf-8"))
    assert [test["max_score"] for test in tests] == [weight(test, weights) for test in tests]
    assert sum(test["max_score"] for test in tests) == GRADESCOPE_TOTAL
    assert results["output"].endswith(f"score {results['score']:g} of {GRADESCOPE_TOTAL:g}")


@pytest.mark.parametrize(
    "run_server, why",
    [
        ("#!/bin/sh\necho 'cannot bind' >&2\nexit 1\n", "exited with status 1"),
        (None, "has no run-server at its root"),
    ],
    ids=["exits-at-once", "missing"],
)
def test_gradescope_autograder_without_a_server_still_writes_results(
    tmp_path: Path, script_env: Dict[str, str], run_server: Optional[str], why: str
) -> None:
    """A server that never starts gets a valid results.json: score 0, the reason, and what it printed."""
    root = gradescope_root(tmp_path, run_server)
    finished = run_script(
        GRADESCOPE / "run_autograder", {**script_env, "AUTOGRADER_ROOT": str(root)}, tmp_path
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    results = json.loads((root / "results" / "results.json").read_text(encoding="utf-8"))
    assert results["score"] == 0
    assert results["tests"] == []
    assert results["output"].startswith("Your server did not start: ")
    assert why in results["output"]
    if run_server is not None:
        assert "cannot bind" in results["output"]  # the end of the server's own output


def test_grade_sh_reports_junit_and_exits_1_on_a_failed_check(
    tmp_path: Path, script_env: Dict[str, str]
) -> None:
    """grade.sh grades the checkout it runs in, writes the JUnit report asked for, and exits as the kit."""
    write_run_server(tmp_path)
    args = ["--only", "§2.2", "--format", "junit", "--output", "conform.xml"]
    finished = run_script(CLASSROOM / "grade.sh", script_env, tmp_path, *args)
    assert finished.returncode == 1, finished.stdout + finished.stderr
    assert_server_gone(tmp_path / "server.pid")

    report = ElementTree.parse(tmp_path / "conform.xml").getroot()
    assert int(report.get("failures", "0")) > 0
    cases = {
        case.get("name", ""): case for case in report.iter("testcase") if case.get("name") != "preflight"
    }
    assert sorted(cases) == [
        "§2.2 a CR before the LF is dropped from /quit [crlf-quit]",
        "§2.2 a CR before the LF is dropped from a message [crlf-message]",
        "§2.2 a CR before the LF is dropped from a nickname [crlf-nickname]",
    ]
    failure = cases["§2.2 a CR before the LF is dropped from a message [crlf-message]"].find("failure")
    assert failure is not None
    assert "your server kept the CR" in failure.get("message", "")


def test_grade_sh_exits_0_when_every_chosen_check_passes(tmp_path: Path, script_env: Dict[str, str]) -> None:
    """A section the mistake does not touch passes: grade.sh exits 0, so the command grader awards it."""
    write_run_server(tmp_path)
    finished = run_script(CLASSROOM / "grade.sh", script_env, tmp_path, "--only", "§3")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    checks = len(registry.select([core.FEATURE], ["§3"]))
    assert finished.stdout.splitlines()[-1] == f"{checks} checks: {checks} passed, 0 failed"
    assert_server_gone(tmp_path / "server.pid")


def test_grade_sh_exits_2_when_the_server_does_not_start(tmp_path: Path, script_env: Dict[str, str]) -> None:
    """No server, no grade: grade.sh says so, shows what run-server printed, and exits 2, as the kit would."""
    write_run_server(tmp_path, "#!/bin/sh\necho 'cannot bind' >&2\nexit 1\n")
    finished = run_script(CLASSROOM / "grade.sh", script_env, tmp_path, "--only", "§3")
    assert finished.returncode == 2
    assert "your server did not start" in finished.stderr
    assert "cannot bind" in finished.stderr


def grade_sh_calls(workflow: str) -> List[Tuple[str, List[str]]]:
    """Return each line of the workflow that calls grade.sh: its key (run, command) and the options."""
    calls = []
    for line in workflow.splitlines():
        if "grade.sh" not in line or line.lstrip().startswith("#"):
            continue
        match = re.fullmatch(r"\s*(run|command):\s*(.*)", line)
        assert match, f"grade.sh called from a line that is not run: nor command: {line!r}"
        words = shlex.split(match.group(2))
        script = next(index for index, word in enumerate(words) if word.endswith("grade.sh"))
        calls.append((match.group(1), words[script + 1 :]))
    return calls


def test_workflow_calls_grade_sh_with_options_the_kit_accepts() -> None:
    """Every grade.sh line of classroom.yml parses as mechat conform options, and names real checks."""
    calls = grade_sh_calls((CLASSROOM / "classroom.yml").read_text(encoding="utf-8"))
    graded: List[str] = []
    for key, options in calls:
        args = build_parser().parse_args(["conform", "--port", "7878", *options])  # exits 2 if wrong
        checks = conform.select(args.features, args.only)  # raises on an unknown id or section
        if key == "command":
            graded += [check.id for check in checks]
    assert ("run", ["--format", "junit", "--output", "conform.xml"]) in calls
    # The command grader's steps, one section or more each, grade every check exactly once.
    assert sorted(graded) == sorted(check.id for check in registry.select([core.FEATURE]))


def test_example_scripts_are_executable_bash() -> None:
    """Each script is executable, as the platforms run it, and bash parses it (setup.sh is never run here)."""
    for script in [GRADESCOPE / "setup.sh", GRADESCOPE / "run_autograder", CLASSROOM / "grade.sh"]:
        lines = script.read_text().splitlines()
        assert os.access(script, os.X_OK), f"{script} is not executable"
        assert lines[0] == "#!/usr/bin/env bash"
        assert "set -euo pipefail" in lines
        parsed = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
        assert parsed.returncode == 0, parsed.stderr


def test_the_page_shows_every_example_file() -> None:
    """docs/instructors.rst includes each example file whole, so the page shows the files tested here."""
    page = (ROOT / "docs" / "instructors.rst").read_text(encoding="utf-8")
    included = set(re.findall(r"^\.\. literalinclude:: (\S+)$", page, re.MULTILINE))
    examples = {
        path.relative_to(ROOT / "docs").as_posix() for path in (ROOT / "docs" / "examples").rglob("*")
    }
    assert included == {path for path in examples if (ROOT / "docs" / path).is_file()}
