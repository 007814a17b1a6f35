"""Write the kit's verdicts for people and for graders: text, JSON, JUnit XML, Gradescope.

Students read the text report.  Instructors grade with tools that read
files: Gradescope reads ``results.json`` in its own schema, GitHub
Classroom and CI test reporters read JUnit XML, and a script reads JSON.
Every format carries the same facts per check (id, feature, section,
title, verdict, what was sent, what was expected, what came back, and the
likely mistake), built from one :class:`Grading`, so no format can say
something another does not.

Points come from a weights file (``--weights FILE``): a JSON object whose
keys are check ids or spec sections, and whose values are points.  A check
takes the weight of its id if listed, else of the most specific section
that contains it (``"§2.1"`` before ``"§2"``), else one point.
"""

import json
import xml.etree.ElementTree as ElementTree
from types import MappingProxyType
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple

from mechat.conform.clients import Address
from mechat.conform.diagnose import plural
from mechat.conform.preflight import Preflight
from mechat.conform.registry import CHECKS, Check, in_section, is_section, section_key
from mechat.conform.runner import Result, Status

Weights = Mapping[str, float]

#: The most points one check may be worth: totals stay finite, and far from any float's limits.
MAX_WEIGHT = 1_000_000


def load_weights(text: str) -> Dict[str, float]:
    """Parse a weights file; raise ValueError naming the first problem."""
    try:
        weights = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(weights, dict):
        raise ValueError('expected a JSON object such as {"§2": 2, "full-duplex": 5}')
    ids = {check.id for check in CHECKS}
    for key, value in weights.items():
        if not (key in ids or is_section(key)):
            raise ValueError(f"{key!r} is neither a check id nor a section like §2.1 (mechat conform --list)")
        if is_section(key) and not any(in_section(check, key) for check in CHECKS):
            raise ValueError(f"no check is in section {key} (mechat conform --list)")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and 0 <= value <= MAX_WEIGHT):  # NaN fails both comparisons
            raise ValueError(
                f"the weight of {key!r} must be a number of points from 0 to {MAX_WEIGHT:,}, not {value!r}"
            )
    return {key: float(value) for key, value in weights.items()}


def points(check: Check, weights: Weights) -> float:
    """Return what ``check`` is worth: its id's weight, its closest section's, or 1."""
    if check.id in weights:
        return weights[check.id]
    sections = [key for key in weights if is_section(key) and in_section(check, key)]
    if sections:
        return weights[max(sections, key=lambda key: len(section_key(key)))]
    return 1.0


class Grading(NamedTuple):
    """Everything one run found: where, the preflight, every verdict, and how long it took."""

    address: Address
    preflight: Preflight
    results: List[Result]
    seconds: float
    weights: Weights = MappingProxyType({})

    def count(self, status: Status) -> int:
        """Count the checks with ``status``."""
        return sum(result.status is status for result in self.results)

    def score(self) -> float:
        """Return the points of the checks that passed."""
        return sum(points(result.check, self.weights) for result in self.results if result.passed)

    def explanation(self) -> str:
        """Return the preflight's paragraph about these checks, or "" if the preflight passed."""
        return self.preflight.paragraph([result.check for result in self.results])

    def max_score(self) -> float:
        """Return the points of every check run or skipped."""
        return sum(points(result.check, self.weights) for result in self.results)


def summary(grading: Grading) -> str:
    """Return the one-line summary that ends every text report."""
    passed, failed = grading.count(Status.PASS), grading.count(Status.FAIL)
    line = f"{plural(len(grading.results), 'check')}: {passed} passed, {failed} failed"
    if grading.count(Status.SKIP):
        line += f", {grading.count(Status.SKIP)} skipped"
    if grading.weights:
        line += f"; score {grading.score():g} of {grading.max_score():g}"
    return line


def as_text(grading: Grading) -> str:
    """Return the text report: the preflight's paragraph if it failed, one line per check, the summary."""
    lines = [grading.explanation()] if grading.preflight.failure else []
    lines += [str(result) for result in grading.results]
    return "\n".join([*lines, summary(grading)]) + "\n"


def record(result: Result, weights: Weights) -> Dict[str, Any]:
    """Return one check's verdict as a JSON object."""
    exchange = result.exchange
    worth = points(result.check, weights)
    return {
        "id": result.check.id,
        "feature": result.check.feature,
        "section": result.check.section,
        "title": result.check.title,
        "status": result.status.value,
        "sent": exchange.sent if exchange else None,
        "expected": exchange.expected if exchange else None,
        "got": exchange.got if exchange else None,
        "diagnosis": (exchange.diagnosis if exchange else result.skipped_because) or None,
        "points": worth if result.passed else 0.0,
        "max_points": worth,
        "seconds": round(result.seconds, 3),
    }


def preflight_record(grading: Grading) -> Dict[str, Any]:
    """Return the preflight's outcome as a JSON object."""
    failure = grading.preflight.failure
    return {
        "status": "FAIL" if failure else "PASS",
        "reached": grading.preflight.reached.name.lower(),
        "explanation": grading.explanation() or None,
    }


def as_json(grading: Grading) -> str:
    """Return the JSON report: the run, the preflight, and one object per check."""
    host, port = grading.address
    document = {
        "server": f"{host}:{port}",
        "summary": summary(grading),
        "passed": grading.count(Status.PASS),
        "failed": grading.count(Status.FAIL),
        "skipped": grading.count(Status.SKIP),
        "score": grading.score(),
        "max_score": grading.max_score(),
        "seconds": round(grading.seconds, 3),
        "preflight": preflight_record(grading),
        "checks": [record(result, grading.weights) for result in grading.results],
    }
    return json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def as_junit(grading: Grading) -> str:
    """Return a JUnit XML report: a suite for the preflight, and one per feature."""
    suites = [suite("preflight", [preflight_case(grading)])]
    for feature in dict.fromkeys(result.check.feature for result in grading.results):
        suites.append(
            suite(
                feature, [check_case(result) for result in grading.results if result.check.feature == feature]
            )
        )
    root = ElementTree.Element("testsuites", name="mechat conform", time=f"{grading.seconds:.3f}")
    root.extend(suites)
    for name in ("tests", "failures", "errors", "skipped"):
        root.set(name, str(sum(int(suite.get(name, "0")) for suite in suites)))
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def suite(name: str, cases: List[ElementTree.Element]) -> ElementTree.Element:
    """Return a testsuite of ``cases``, with its counts."""
    element = ElementTree.Element("testsuite", name=f"mechat conform: {name}")
    element.extend(cases)
    element.set("tests", str(len(cases)))
    element.set("failures", str(sum(case.find("failure") is not None for case in cases)))
    element.set("errors", "0")
    element.set("skipped", str(sum(case.find("skipped") is not None for case in cases)))
    element.set("time", f"{sum(float(case.get('time', '0')) for case in cases):.3f}")
    return element


def testcase(classname: str, name: str, seconds: float) -> ElementTree.Element:
    """Return an empty testcase: a pass until a failure or a skip is added."""
    return ElementTree.Element("testcase", classname=classname, name=name, time=f"{seconds:.3f}")


def preflight_case(grading: Grading) -> ElementTree.Element:
    """Return the preflight as a testcase, failed with its paragraph if it failed."""
    case = testcase("mechat.conform.preflight", "preflight", 0.0)
    explanation = grading.explanation()
    if explanation:
        ElementTree.SubElement(case, "failure", message=explanation, type="FAIL").text = explanation
    return case


def check_case(result: Result) -> ElementTree.Element:
    """Return one check as a testcase: its failure shows the exchange, its skip the reason."""
    check = result.check
    case = testcase(
        f"mechat.conform.{check.feature}", f"{check.section} {check.title} [{check.id}]", result.seconds
    )
    if result.status is Status.FAIL and result.exchange is not None:
        message = result.exchange.diagnosis or f"got {result.exchange.got}"
        ElementTree.SubElement(case, "failure", message=message, type="FAIL").text = str(result.exchange)
    elif result.status is Status.SKIP:
        ElementTree.SubElement(case, "skipped", message=result.skipped_because)
    return case


def as_gradescope(grading: Grading) -> str:
    """Return Gradescope's results.json: one test per check, scored by the weights."""
    explanation = grading.explanation()
    document = {
        "score": grading.score(),
        "execution_time": round(grading.seconds),
        "output": "\n\n".join(filter(None, [explanation, summary(grading)])),
        "output_format": "text",
        "test_output_format": "text",
        "test_name_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": [gradescope_test(result, grading.weights) for result in grading.results],
    }
    return json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def gradescope_test(result: Result, weights: Weights) -> Dict[str, Any]:
    """Return one check as a Gradescope test; a skipped check fails, with the reason as output."""
    check = result.check
    worth = points(check, weights)
    return {
        "name": f"{check.section} {check.title}",
        "score": worth if result.passed else 0.0,
        "max_score": worth,
        "status": "passed" if result.passed else "failed",
        "output": str(result.exchange) if result.exchange is not None else result.skipped_because,
        "tags": [check.feature, check.section, check.id],
        "visibility": "visible",
    }


#: The writer of each format, by the name ``--format`` takes.
WRITERS = {"text": as_text, "json": as_json, "junit": as_junit, "gradescope": as_gradescope}


def render(format: str, grading: Grading) -> str:
    """Return the report in ``format``, one of :data:`FORMATS`."""
    return WRITERS[format](grading)


def listing(checks: Iterable[Check]) -> str:
    """Return one line per check: id, section, feature and title, for ``--list``."""
    checks = list(checks)
    width = max((len(check.feature) for check in checks), default=0)
    return "".join(
        f"{check.id:<26} {check.section:<6} {check.feature:<{width}} {check.title}\n" for check in checks
    )


#: The names ``--format`` takes.
FORMATS = tuple(WRITERS)
