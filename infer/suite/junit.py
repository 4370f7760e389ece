"""A suite run as a JUnit XML file, the format CI systems show natively: one test case per
intent (and one for the suite's own thresholds, when it has any), a failure per case that
missed a threshold, with the failed thresholds as its message and the failed
conversations in its text."""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.etree import ElementTree


@dataclass
class JUnitCase:
    name: str
    failures: list[str] = field(default_factory=list)  # one line per failed threshold
    details: str = ""  # the failure's text: which conversations failed and why
    output: str = ""  # the case's figures, shown as its standard output
    seconds: float = 0.0  # its conversations' wall times, added up


def junit_xml(suite: str, cases: list[JUnitCase], *, properties: dict[str, str], seconds: float) -> str:
    failed = sum(bool(case.failures) for case in cases)
    root = ElementTree.Element(
        "testsuites", name="userlm test", tests=str(len(cases)), failures=str(failed), errors="0", time=f"{seconds:.3f}"
    )
    element = ElementTree.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(cases)),
        failures=str(failed),
        errors="0",
        skipped="0",
        time=f"{seconds:.3f}",
    )
    listed = ElementTree.SubElement(element, "properties")
    for name, value in properties.items():
        ElementTree.SubElement(listed, "property", name=name, value=str(value))
    for case in cases:
        node = ElementTree.SubElement(element, "testcase", classname=suite, name=case.name, time=f"{case.seconds:.3f}")
        if case.failures:
            failure = ElementTree.SubElement(node, "failure", message="; ".join(case.failures), type="threshold")
            failure.text = "\n".join(case.failures) + ("\n\n" + case.details if case.details else "")
        if case.output:
            ElementTree.SubElement(node, "system-out").text = case.output
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
