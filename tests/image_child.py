"""An image release run in a child process by tests/test_image_target.py, so a test can really
kill it. Usage: image_child.py DIR (DIR/spec.json: settings, run, release, image; the run state
is checkpointed to DIR/state.json as the engine checkpoints it to the ledger)."""

import json
import os
import sys
from pathlib import Path

from deploy import config, facts
from deploy.engine import Console, StepContext
from deploy.facts import ImageRef
from deploy.targets import target_for

d = Path(sys.argv[1])
spec = json.loads((d / "spec.json").read_text())
s = config.parse(spec["raw"], name="staging", file=Path("env/staging.toml"), root=Path(spec["root"]))


def save(state) -> None:
    tmp = d / "state.json.tmp"
    tmp.write_text(facts.dumps(state))
    os.replace(tmp, d / "state.json")


ctx = StepContext(run_id=spec["run_id"], env="staging", state={}, console=Console(open(d / "out.txt", "a")), save=save)
ref = spec["ref"]
ctx.put(ImageRef(reference=ref, digest=ref.rsplit("@", 1)[1]))
save(ctx.state)
print(target_for(s).release(ctx, spec["release_id"], None, spec["environ"]), flush=True)
