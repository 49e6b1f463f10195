"""The ledger (being split into one module per job)."""

from deploy.ledger._locks import *  # noqa: F401,F403
