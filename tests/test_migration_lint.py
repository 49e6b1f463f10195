"""Additive or destructive: the verdict on a migration before it runs (deploy/migrations/_lint.py),
judged from squawk's recorded output (tests/fixtures/squawk/<case>.json from `squawk --reporter
json`, <case>.parse from `squawk --debug parse`, squawk-cli 2.70.0) and from the SQLite
classifier; and the statement splitter that finds a script's own BEGIN/COMMIT (_sql.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.migrations import _lint, _sql
from deploy.migrations._files import LocalMigration, checksum

FIX = Path(__file__).parent / "fixtures" / "squawk"
CASES = sorted(p.stem for p in FIX.glob("*.sql"))


def recorded(case: str) -> _lint.MigrationLint:
    sql = (FIX / f"{case}.sql").read_text()
    findings = _lint.parse_findings((FIX / f"{case}.json").read_text(), sql)
    return _lint.judge_postgres(case, sql, findings, _lint.parse_tree((FIX / f"{case}.parse").read_text()))


def test_every_recorded_case_is_named_by_its_verdict():
    assert len(CASES) >= 15
    for case in CASES:
        assert case.startswith(("additive_", "destructive_", "unparsable")), case


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("additive_")])
def test_additive_shapes_are_additive_with_squawk_notes_kept(case):
    v = recorded(case)
    assert v.additive and v.kind == "additive" and v.reasons == (), v.reasons
    # squawk's other advice (locks, robustness) is kept for the dry run and the ledger
    if case != "additive_seed_rows":
        assert v.findings and "additive (squawk also notes:" in v.summary()


@pytest.mark.parametrize("case, why", [
    ("destructive_drop_column", "ban-drop-column"),
    ("destructive_rename_column", "renaming-column"),
    ("destructive_type_change", "changing-column-type"),
    ("destructive_set_not_null", "adding-not-nullable-field"),
    ("destructive_required_column", "adding-required-field"),
    ("destructive_drop_table", "ban-drop-table"),
    ("destructive_drop_default", "ban-drop-default"),
    ("destructive_update_rewrite", "data rewrite (UPDATE)"),      # squawk has no rule for DML: the parse tree
    ("destructive_delete_rows", "data rewrite (DELETE)"),
    ("destructive_replace_function", "replaces an existing object"),
    ("destructive_prisma_enum_change", "ban-drop-type"),
    ("unparsable", "squawk cannot parse it"),
], ids=lambda x: x if x.startswith(("destructive", "unpars")) else None)
def test_destructive_shapes_say_why_with_the_line(case, why):
    v = recorded(case)
    assert not v.additive and v.kind == "destructive"
    assert any(why in r for r in v.reasons), v.reasons
    assert all(r.startswith("line ") for r in v.reasons)
    assert v.summary().startswith("destructive: ")


def test_one_reason_per_line_squawks_rule_first():
    v = recorded("destructive_drop_column")
    assert v.reasons == ("line 2: ban-drop-column (Dropping a column may break existing clients)",)


def test_findings_lines_are_one_based():
    sql = (FIX / "destructive_drop_column.sql").read_text()
    found = _lint.parse_findings((FIX / "destructive_drop_column.json").read_text(), sql)
    drop = [f for f in found if f.rule == "ban-drop-column"]
    assert drop and drop[0].line == 2 and sql.splitlines()[1].startswith("ALTER TABLE")


def test_squawk_output_that_is_not_json_fails_closed():
    from deploy.errors import MigrationFailed

    with pytest.raises(MigrationFailed, match="not JSON"):
        _lint.parse_findings("error: something broke", "SELECT 1;")


def test_the_recorded_outputs_match_the_installed_squawk():
    """The fixtures are what the squawk this project installs says today."""
    binary = _lint.find_squawk()
    assert binary, "squawk-cli is a dependency: pip install -e ."
    for case in ("additive_create_table", "destructive_drop_column", "destructive_update_rewrite"):
        sql = (FIX / f"{case}.sql").read_text()
        live = _lint.lint_postgres(LocalMigration(case, FIX, sql, checksum(sql), False), binary)
        assert (live.additive, live.reasons) == (recorded(case).additive, recorded(case).reasons), case


def test_lint_needs_no_squawk_for_sqlite_and_nothing_to_lint():
    assert _lint.lint([], "postgresql") == ()
    sql = 'DROP TABLE "x";'
    out = _lint.lint([LocalMigration("m", Path("."), sql, checksum(sql), True)], "sqlite")
    assert out[0].linter == "sqlite rules" and not out[0].additive and out[0].has_down


# ---------------------------------------------------------------- SQLite's conservative classifier

PRISMA_SQLITE_REDEFINE = '''-- RedefineTables
PRAGMA defer_foreign_keys=ON;
PRAGMA foreign_keys=OFF;
CREATE TABLE "new_Shop" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "domain" TEXT NOT NULL
);
INSERT INTO "new_Shop" ("domain", "id") SELECT "domain", "id" FROM "Shop";
DROP TABLE "Shop";
ALTER TABLE "new_Shop" RENAME TO "Shop";
PRAGMA foreign_keys=ON;
PRAGMA defer_foreign_keys=OFF;
'''


@pytest.mark.parametrize("sql", [
    'CREATE TABLE "Order" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "total" INTEGER NOT NULL);',
    'ALTER TABLE "Shop" ADD COLUMN "note" TEXT;',
    'ALTER TABLE "Shop" ADD COLUMN "tier" TEXT NOT NULL DEFAULT \'free\';',
    'CREATE UNIQUE INDEX "Shop_name_key" ON "Shop"("name");',
    'INSERT INTO "Plan" ("id") VALUES (\'a;b\');',
    '-- only a comment\n',
], ids=["create-table-autoincrement", "nullable-column", "defaulted-column", "unique-index", "seed-row",
        "empty-migration"])
def test_sqlite_additive_shapes(sql):
    v = _lint.judge_sqlite("m", sql)
    assert v.additive, v.reasons


@pytest.mark.parametrize("sql, why", [
    (PRISMA_SQLITE_REDEFINE, "drop"),
    ('ALTER TABLE "Shop" DROP COLUMN "name";', "drop"),
    ('ALTER TABLE "Shop" RENAME COLUMN "domain" TO "host";', "rename"),
    ('ALTER TABLE "Shop" ADD COLUMN "owner" TEXT NOT NULL;', "required column"),
    ('UPDATE "Shop" SET "plan" = \'pro\';', "data rewrite"),
    ('DELETE FROM "Shop";', "data rewrite"),
    ('INSERT OR REPLACE INTO "Shop" ("id") VALUES (\'a\');', "data rewrite"),
    ('CREATE TRIGGER t AFTER INSERT ON "Shop" BEGIN SELECT 1; END;', "not known to be additive"),
], ids=["prisma-redefine-table", "drop-column", "rename-column", "required-column", "update", "delete",
        "insert-or-replace", "trigger"])
def test_sqlite_destructive_shapes(sql, why):
    v = _lint.judge_sqlite("m", sql)
    assert not v.additive and any(why in r for r in v.reasons), v.reasons


def test_unaccepted_is_destructive_without_down_sql_and_not_named():
    from deploy.migrations import unaccepted

    a = _lint.judge_sqlite("a_add", 'ALTER TABLE "S" ADD COLUMN "x" TEXT;')
    d = _lint.judge_sqlite("b_drop", 'ALTER TABLE "S" DROP COLUMN "y";')
    d_down = _lint.judge_sqlite("c_drop", 'ALTER TABLE "S" DROP COLUMN "z";', has_down=True)
    assert unaccepted([a, d, d_down], ()) == (d,)
    assert unaccepted([a, d, d_down], ("b_drop",)) == ()


# ---------------------------------------------------------------- statements and transaction control

def test_split_keeps_semicolons_inside_quotes_dollar_quotes_and_comments():
    script = ("-- a; comment\nINSERT INTO t VALUES ('a;b', E'c\\';d');\n"
              "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;\n"
              "/* x; /* nested; */ y; */ UPDATE \"we;ird\" SET a = 1;\nSELECT $$;$$")
    st = _sql.split(script)
    assert [s.words[0] for s in st] == ["INSERT", "CREATE", "UPDATE", "SELECT"]
    assert [s.line for s in st] == [2, 3, 4, 5]


@pytest.mark.parametrize("script, control", [
    ("BEGIN;\nCREATE TYPE a AS ENUM ('x');\nCOMMIT;\n", ["BEGIN", "COMMIT"]),
    ("start transaction;\nselect 1;\nend;\n", ["START", "END"]),
    ("CREATE TABLE t (begin_at int);\nINSERT INTO t VALUES (1);", []),
    ("SELECT 'BEGIN; COMMIT;';\n", []),
    ("DO $$ BEGIN PERFORM 1; END $$;\n", []),
])
def test_transaction_control_is_found_only_at_the_top(script, control):
    assert [s.words[0] for s in _sql.transaction_control(script)] == control


def test_plain_begin_commit_are_left_out_keeping_lines():
    script = "-- AlterEnum\nBEGIN;\nCREATE TYPE \"P\" AS ENUM ('a');\nCOMMIT;\nALTER TABLE x ADD y int;\n"
    out = _sql.without_transaction_control(script)
    assert out is not None and "BEGIN" not in out and "COMMIT" not in out
    assert out.splitlines()[2] == script.splitlines()[2] and out.count("\n") == script.count("\n")
    assert _sql.without_transaction_control("SELECT 1;") == "SELECT 1;"


@pytest.mark.parametrize("script", [
    "BEGIN;\nSELECT 1;\nROLLBACK;\n",
    "BEGIN ISOLATION LEVEL SERIALIZABLE;\nSELECT 1;\nCOMMIT;\n",
    "BEGIN;\nSAVEPOINT a;\nCOMMIT;\n",
    'CREATE TRIGGER t AFTER INSERT ON "Shop" BEGIN SELECT 1; END;\n',
    "BEGIN;\nSELECT 1;\n",
], ids=["rollback", "isolation-level", "savepoint", "sqlite-trigger-body", "unbalanced"])
def test_other_transaction_control_keeps_the_script_as_written(script):
    assert _sql.without_transaction_control(script) is None
