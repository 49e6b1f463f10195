"""The db.* tasks through the real CLI on a Postgres-backed test environment: provision,
status, migrate, backup, verify, rollback, resolve, restore."""

import secrets

import psycopg

TEST_ENV = '''
[environment]
kind = "remote"
app_dir = "examples/app"
app_url = "http://127.0.0.1:9/"

[database]
provider = "postgresql"
migrations_dir = "prisma/postgres/migrations"
backup_dir = ".deploy/backups"

[golive]
backup_verify_url_var = "SCRATCH_DATABASE_URL"    # the app role may not CREATE DATABASE
'''


def test_provision_then_migrate_backup_verify_rollback_and_restore(project, pg_cluster):
    project.write_env("test", TEST_ENV)
    project.commit("test env")
    name = f"occ_{secrets.token_hex(3)}"
    admin = {"DATABASE_ADMIN_URL": pg_cluster.url}
    r = project.invoke("db.provision", "--env=test", f"--db-name={name}", f"--role={name}", extra_env=admin)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"/{name}" in r.stdout and ":***@" in r.stdout
    secret_file = project.root / "env/test.local.env"
    url = secret_file.read_text().split("=", 1)[1].strip().strip("'")
    assert secret_file.stat().st_mode & 0o077 == 0
    password = url.split(":")[2].split("@")[0]
    assert password not in r.stdout + r.stderr
    env = {"DATABASE_URL": url}
    from deploy import dburl

    conninfo = dburl.parse(url).conninfo()  # Prisma's ?schema= is not libpq's

    st = project.invoke("db.status", "--env=test", extra_env=env)
    assert st.returncode == 0 and "3 pending" in st.stdout, st.stdout + st.stderr
    m = project.invoke("db.migrate", "--env=test", extra_env=env)
    assert m.returncode == 0 and "applied 3" in m.stdout, m.stderr
    with psycopg.connect(conninfo) as c:
        c.execute('INSERT INTO "Shop" (id, domain, name) VALUES (\'s1\', \'a.myshopify.com\', \'A\')')
    b = project.invoke("db.backup", "--env=test", extra_env=env)
    assert b.returncode == 0 and ".dump" in b.stdout, b.stderr
    v = project.invoke("db.verify-backup", "--env=test", extra_env={**env, "SCRATCH_DATABASE_URL": ""})
    assert v.returncode == 2 and "SCRATCH_DATABASE_URL is not set" in v.stderr
    v = project.invoke("db.verify-backup", "--env=test", extra_env={**env, "SCRATCH_DATABASE_URL": pg_cluster.url})
    assert v.returncode == 0 and "verified" in v.stdout, v.stdout + v.stderr

    rb = project.invoke("db.rollback", "--env=test", "--steps=1", extra_env=env)
    assert rb.returncode == 0 and "20240318080000_session_expiry" in rb.stdout, rb.stderr
    st = project.invoke("db.status", "--env=test", extra_env=env)
    assert "1 pending" in st.stdout
    with psycopg.connect(conninfo) as c:
        c.execute('DELETE FROM "Shop"')
    rs = project.invoke("db.restore", "--env=test", "--yes", extra_env=env)
    assert rs.returncode == 0, rs.stderr
    with psycopg.connect(conninfo) as c:
        assert c.execute('SELECT count(*) FROM "Shop"').fetchone()[0] == 1
    st = project.invoke("db.status", "--env=test", extra_env=env)
    assert "0 pending" in st.stdout  # the backup was taken with all three applied


def test_restore_on_a_shared_environment_needs_yes(project, pg_url):
    project.write_env("test", TEST_ENV)
    project.commit("test env")
    r = project.invoke("db.restore", "--env=test", "--file=/nonexistent.dump", extra_env={"DATABASE_URL": pg_url})
    assert r.returncode != 0 and "Traceback" not in r.stderr


def test_resolve_needs_exactly_one_flag_and_missing_url_is_named(project, pg_url):
    project.write_env("test", TEST_ENV)
    project.commit("test env")
    r = project.invoke("db.resolve", "--env=test", extra_env={"DATABASE_URL": pg_url})
    assert r.returncode == 2 and "exactly one of --applied" in r.stderr
    r = project.invoke("db.status", "--env=test", extra_env={"DATABASE_URL": ""})
    assert r.returncode == 2 and "DATABASE_URL is not set for the test environment" in r.stderr


def test_a_password_libpq_would_quote_never_reaches_the_output(project):
    """A raw '%', whitespace or a raw '?' in the password: libpq's own error would quote the
    token (the password, or the part after the '?'); db.status refuses it naming the fix."""
    project.write_env("test", TEST_ENV)
    project.commit("test env")
    for password, what in [("Zq9%zzTopSecret", "raw '%'"), ("Zq9 zzTopSecret", "whitespace"),
                           ("Zq9?zzTopSecret", "raw '?'")]:
        url = f"postgresql://app:{password}@127.0.0.1:9/occ"
        r = project.invoke("db.status", "--env=test", extra_env={"DATABASE_URL": url})
        out = r.stdout + r.stderr
        assert r.returncode == 2 and what in out and "Percent-encode" in out, out
        assert "Traceback" not in out and "postgresql://app:***@127.0.0.1:9/occ" in out
        for piece in ("Zq9", "zzTop", "TopSecret"):
            assert piece not in out, (password, out)


NO_DATABASE_ENV = '''
[environment]
kind = "local"
app_dir = "examples/app"

[database]
provider = "none"
'''


def test_every_db_task_on_an_environment_without_a_database_says_so_and_exits_2(project):
    project.write_env("nodb", NO_DATABASE_ENV)
    project.commit("an environment without a database")
    for args in (["db.status"], ["db.migrate"], ["db.backup"], ["db.verify-backup"], ["db.restore", "--yes"],
                 ["db.rollback", "--yes"], ["db.resolve", "--applied=x", "--yes"]):
        r = project.invoke(*args, "--env=nodb")
        assert r.returncode == 2, (args, r.stdout + r.stderr)
        assert 'The nodb environment has no database (database.provider = "none" in nodb.toml)' in r.stderr, args
        assert "Traceback" not in r.stderr
