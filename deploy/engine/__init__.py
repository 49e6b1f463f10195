"""Plan, Step, Runner (being split into one module per job)."""

from deploy.engine._runner import *  # noqa: F401,F403
