"""Plan, Step, Runner: how every flow changes an environment (the runner's own docstring,
deploy/engine/_runner.py, tells how a run is applied, resumed and aborted).

    _plan       Plan, Step, Touch: what a flow will do, as data, and its rendering
    _context    StepContext (what a step sees) and Outcome (what a run returns)
    _console    Console: one redacted progress line per step
    _signals    SIGINT/SIGTERM: interrupt the step, never the undo
    _heartbeat  the run's lock kept alive; LockLost when it was taken over
    _runner     Runner: applies a plan under the lock, records it, undoes on failure

`later` (deploy/deferred.py): a step's run/undo/finish named as "module:function", loaded when it runs.
"""

from deploy.engine._console import DETAIL_MAX, Console
from deploy.engine._context import Outcome, StepContext
from deploy.engine._heartbeat import LockLost
from deploy.engine._plan import Plan, Step, StepFn, Touch
from deploy.engine._runner import Runner
from deploy.engine._signals import Interrupted
from deploy.deferred import Later, later

__all__ = ["DETAIL_MAX", "Console", "Interrupted", "Later", "LockLost", "Outcome", "Plan", "Runner", "Step",
           "StepContext", "StepFn", "Touch", "later"]
