"""Fixtures that start real parts live in deploy/testing/ and are loaded here as plugins."""

pytest_plugins = [
    "deploy.testing.postgres",
    "deploy.testing.sshd",
    "deploy.testing.shopify",
    "deploy.testing.reports",
    "deploy.testing.project",
    "deploy.testing.app",
    "deploy.testing.shopify_app",
    "deploy.testing.stage",
]
