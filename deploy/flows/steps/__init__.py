"""The steps flows are made of (being split into one module per job)."""

from deploy.flows.steps._database import *  # noqa: F401,F403
