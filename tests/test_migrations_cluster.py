"""The throwaway Postgres cluster that every database test stands on."""

import psycopg
import pytest


def test_cluster_serves_fresh_databases_over_password_auth(pg_cluster, pg_url):
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("select current_user, count(*) from pg_tables where schemaname = 'public'").fetchone() == (
            "postgres", 0)
    other = pg_cluster.create_database()
    assert other != pg_url and other.rsplit("/", 1)[1] != pg_url.rsplit("/", 1)[1]
    assert pg_cluster.major_version >= 12


def test_cluster_rejects_a_wrong_password(pg_cluster):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg_cluster.url_for("postgres", password="wrong"), connect_timeout=5).close()
