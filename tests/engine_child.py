"""A small flow run in a child process by the engine tests, so they can really kill it.

Each step appends `<name>` to <dir>/world (the "environment"); each undo appends
`-<name>`. A step named in BLOCK_AT waits for <dir>/go before finishing; FAIL_AT fails.
Usage: engine_child.py DIR run|resume|abort [RUN_ID]  (BREAK_LOCK=1: resume/abort with --break-lock)
"""

import os
import sys
import threading
import time
from pathlib import Path

import dataclasses

from deploy.engine import Console, Plan, Runner, Step
from deploy.facts import fact
from deploy.errors import DeployError
from deploy.ledger import Ledger

@fact
@dataclasses.dataclass(frozen=True)
class Ran:
    steps: tuple[str, ...]


STEPS = ["preflight", "build", "migrate", "release", "smoke"]


def plan(d: Path) -> Plan:
    world = d / "world"

    def make(name):
        def run(ctx):
            ran = ctx.get(Ran)
            ctx.put(Ran((*(ran.steps if ran else ()), name)))
            if os.environ.get("BLOCK_AT") == name:
                (d / "blocked").write_text(str(os.getpid()))
                pause = threading.Event()   # not time.sleep: under libfaketime its clock_nanosleep fails (EINVAL)
                while not (d / "go").exists():
                    pause.wait(0.05)
            if os.environ.get("FAIL_AT") == name:
                raise DeployError(f"{name} broke on purpose")
            with world.open("a") as f:
                f.write(name + "\n")
            return f"{name} ok"

        def undo(ctx):
            with world.open("a") as f:
                f.write("-" + name + "\n")
            return f"{name} undone"

        return Step(name, f"do {name}", run=run, undo=undo if name != "preflight" else None)

    return Plan(flow="promote", env="test", steps=[make(n) for n in STEPS], sha="abc123", args={"dir": str(d)})


def main() -> int:
    d, mode = Path(sys.argv[1]), sys.argv[2]
    ledger = Ledger.open(d, os.environ.get("DEPLOY_LEDGER_URL"))
    runner = Runner(ledger, Console(), rollback=os.environ.get("NO_ROLLBACK") != "1")
    p = plan(d)
    try:
        if mode == "run":
            outcome = runner.execute(p)
        elif mode == "resume":
            outcome = runner.resume(p, sys.argv[3], break_lock=os.environ.get("BREAK_LOCK") == "1")
        else:
            outcome = runner.abort(p, sys.argv[3], break_lock=os.environ.get("BREAK_LOCK") == "1")
    except DeployError as e:
        print(f"error: {e}", file=sys.stderr)
        return 4
    print(f"outcome {outcome.status} {outcome.run_id}")
    return 0 if outcome.ok or outcome.status == "aborted" else 1


if __name__ == "__main__":
    sys.exit(main())
