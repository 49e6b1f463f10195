"""Seconds per test file from a pytest JUnit XML report, as tests/file_seconds.json holds them.

`python -m deploy.testing.balance report.xml > tests/file_seconds.json` after a full run
(`./scripts/deploy/test --junitxml=report.xml`): tests/conftest.py hands the heaviest files
to the xdist workers first, so a long file does not start last and keep one worker busy
alone at the end of the run.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict


def file_seconds(xml_path: str) -> dict[str, int]:
    """`tests/<file>.py` -> whole seconds its test cases took, heaviest first."""
    total: defaultdict[str, float] = defaultdict(float)
    for case in ET.parse(xml_path).iter("testcase"):
        cls = case.get("classname") or ""
        parts = cls.split(".")
        # classname is the module path, dotted (tests.test_x), then any class names (Capitalised)
        mod = [p for p in parts if not p[:1].isupper()]
        if not mod:
            continue
        total["/".join(mod) + ".py"] += float(case.get("time") or 0)
    return {f: round(s) for f, s in sorted(total.items(), key=lambda kv: -kv[1])}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m deploy.testing.balance REPORT.xml > tests/file_seconds.json", file=sys.stderr)
        return 2
    json.dump(file_seconds(argv[0]), sys.stdout, indent=0)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
