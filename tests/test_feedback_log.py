import pytest
"""feedback/deployment.md: append-only, one line per entry, never interleaved."""

import subprocess
import sys
from pathlib import Path

from deploy import feedback

ROOT = Path(__file__).resolve().parents[1]

WRITER = """
import sys
from pathlib import Path
from deploy import feedback
root, n, tag = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for i in range(n):
    feedback.append(root, feedback.Entry(kind="blocker", env="staging", outcome="blocker", who=tag,
                                         text=f"{tag}-{i} " + "x" * 3000))
"""


@pytest.mark.slow
def test_concurrent_writers_never_interleave_a_line(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "60", f"w{k}"],
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}) for k in range(8)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    text = feedback.log_path(tmp_path).read_text()
    assert text.startswith(feedback.HEADER) and text.count("# Deployment log") == 1
    lines = feedback.entries(tmp_path)
    assert len(lines) == 8 * 60
    for ln in lines:
        parts = ln.split(" | ")
        who, body = parts[4], parts[5]
        assert who == f"by {body.split('-')[0]}" and body.endswith("x" * 3000), ln[:120]
    for k in range(8):  # each writer's entries in its own order
        mine = [int(ln.split(" | ")[5].split(" ")[0].split("-")[1]) for ln in lines if f"| by w{k} |" in ln]
        assert mine == list(range(60))


def test_an_entry_is_one_line_whatever_its_text(tmp_path):
    feedback.append(tmp_path, feedback.Entry(kind="readiness", env="production", outcome="readiness", who="pat",
                                             text="line one\nline two | with a pipe"))
    (line,) = feedback.entries(tmp_path)
    assert "line one line two / with a pipe" in line
