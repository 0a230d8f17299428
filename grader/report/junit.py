"""The JUnit XML report, written with the junit-xml package and kept valid against Jenkins' JUnit schema.

One testsuite per run, one testcase per check (classname ``<lab>.<category>``). A failed check is a
``<failure>``, a fault of the harness an ``<error>``. The seed and each check's points are testsuite
properties (the schema allows no properties on a testcase). junit-xml writes ``<skipped type=.. message=..>``,
which the schema refuses, so skipped elements are rewritten to carry their message as text.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from junit_xml import TestCase, TestSuite, to_xml_report_string

from grader.report.model import CheckResult, RunResult

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: str) -> str:
    """XML 1.0 cannot carry most control characters: show them escaped instead."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _failure_text(message: str, transcript: str, hint: str, check: CheckResult | None = None) -> str:
    parts = [message]
    if transcript:
        parts.append("Transcript:\n" + transcript)
    if check is not None and check.differential is not None:
        parts.append(check.differential.text)
    if check is not None and check.smallest is not None:
        parts.append("Smallest failing case: " + check.smallest.summary)
    if check is not None and check.pcap:
        parts.append("Packet capture: " + check.pcap)
    if hint:
        parts.append("Hint: " + hint)
    return _clean("\n\n".join(parts))


def to_junit(run: RunResult) -> str:
    cases: list[TestCase] = []
    for c in run.checks:
        case = TestCase(
            name=c.id,
            classname=f"{run.lab}.{c.category}",
            elapsed_sec=c.duration_s,
            status=c.outcome,
        )
        first_line = _clean(c.message.splitlines()[0] if c.message else c.outcome)
        if c.outcome == "failed":
            case.add_failure_info(message=first_line, output=_failure_text(c.message, c.transcript, c.hint, c),
                                  failure_type="failure")
        elif c.outcome == "error":
            case.add_error_info(message=first_line, output=_failure_text(c.message, c.transcript, ""),
                                error_type="error")
        elif c.outcome == "skipped":
            case.add_skipped_info(message=first_line)
        cases.append(case)
    properties = {"seed": str(run.seed), "score": f"{run.score:g}", "max_score": f"{run.max_score:g}",
                  "status": run.status, "submission": run.submission}
    for c in run.checks:
        properties[f"points.{c.id}"] = f"{c.points:g}"
    suite = TestSuite(run.lab, cases, properties=properties)
    xml = to_xml_report_string([suite], prettyprint=True, encoding="utf-8")
    return _fix_skipped(xml)


def _fix_skipped(xml: str) -> str:
    root = ET.fromstring(xml)
    for skipped in root.iter("skipped"):
        message = skipped.get("message") or skipped.text or ""
        skipped.attrib.clear()
        skipped.text = message
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
