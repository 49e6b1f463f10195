"""Test helpers that start real parts: a throwaway Postgres cluster, sshd hosts on
loopback, the recording Shopify CLI stand-in, evidence report builders.

Each module is also a pytest plugin (its fixtures are loaded by tests/conftest.py), so
the test suite and the benchmarks reuse one implementation.
"""
