"""Flows compose primitives into plans: promote, rollback, drills, go-live, status."""
