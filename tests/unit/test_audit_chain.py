"""The audit chain: appends verify; every kind of tampering is caught at the first bad row.

Rows are appended through hms.audit.record in real transactions, then tampered with
behind the application's back (raw SQL, as someone with database access would), and
verify() / `hms audit verify` must name the first bad seq. Runs on SQLite and, with
HMS_TEST_DATABASE_URL, on PostgreSQL.
"""

from __future__ import annotations

import threading
from datetime import date
from decimal import Decimal

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text

from hms import audit
from hms.audit import GENESIS, Actor, AuditHead, AuditLog
from hms.cli import main

ACTOR = Actor(user_id=None, username="tester", ip="10.0.0.7")
ROWS = 10


def append(database, count: int, *, start: int = 0) -> None:
    """`count` rows in one transaction, each naming a bed and a patient by id only."""
    with database.transaction() as s:
        for i in range(start, start + count):
            audit.record(s, ACTOR, "bed.reserve", "bed", i, patient_id=100 + i,
                         detail={"ward_id": 3, "n": i})


def check(database, **kwargs) -> audit.VerifyResult:
    with database.transaction(readonly=True) as s:
        return audit.verify(s, **kwargs)


def sql(database, statement: str, **params) -> None:
    with database.engine.begin() as conn:
        conn.execute(text(statement), params)


def row(database, seq: int):
    with database.engine.connect() as conn:
        return conn.execute(select(AuditLog.__table__).where(AuditLog.seq == seq)).one()


def insert_row(database, **values) -> None:
    """Insert an audit row directly (typed through the table, so `at` is stored as usual)."""
    with database.engine.begin() as conn:
        conn.execute(AuditLog.__table__.insert().values(**values))


@pytest.fixture
def chain(database):
    """Ten rows in two transactions."""
    append(database, 6)
    append(database, ROWS - 6, start=6)
    return database


def verify_cli(db_url: str):
    env = {"HMS_DATABASE_URL": db_url, "HMS_AUDIT_KEY": "test-audit-key", "HMS_ENV": "test"}
    return CliRunner().invoke(main, ["audit", "verify"], env=env)


# --- intact chains ---------------------------------------------------------------------

def test_intact_chain_verifies_and_links_every_row(chain):
    result = check(chain)
    assert (result.ok, result.rows_checked, result.first_bad_seq) == (True, ROWS, None)
    assert result.summary == f"audit chain OK: {ROWS} rows verified"
    rows = [row(chain, seq) for seq in range(1, ROWS + 1)]
    assert rows[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in zip(rows, rows[1:]))
    with chain.transaction(readonly=True) as s:
        head = s.get(AuditHead, 1)
        assert (head.seq, head.hash) == (ROWS, rows[-1].hash)


def test_empty_log_verifies(database):
    assert check(database) == audit.VerifyResult(True, 0)


def test_verify_walks_in_batches(chain):
    assert check(chain, batch=3).rows_checked == ROWS
    sql(chain, "UPDATE audit_log SET action = 'bed.release' WHERE seq = 8")
    assert check(chain, batch=3).first_bad_seq == 8


def test_verify_with_another_key_fails_at_the_first_row(chain):
    result = check(chain, key=b"not-the-audit-key")
    assert not result.ok and result.first_bad_seq == 1


def test_cli_verify_ok_exits_0(chain, db_url):
    result = verify_cli(db_url)
    assert result.exit_code == 0, result.output
    assert f"audit chain OK: {ROWS} rows verified" in result.output


# --- edits -----------------------------------------------------------------------------

@pytest.mark.parametrize("assignment", [
    "action = 'bed.release'",
    "detail = '{\"ward_id\": 9, \"n\": 3}'",
    "actor_name = 'someone_else'",
    "patient_id = 999",
    "entity_id = '77'",
    "ip = '192.168.1.1'",
    "at = '2020-01-01 08:00:00'",
])
def test_edited_row_is_named(chain, assignment):
    sql(chain, f"UPDATE audit_log SET {assignment} WHERE seq = 4")
    result = check(chain)
    assert not result.ok
    assert result.first_bad_seq == 4
    assert result.rows_checked == 3
    assert "edited" in result.problem


def test_edit_and_rehash_without_the_key_breaks_the_next_link(chain):
    """Recomputing a plain SHA-256 (no key) for an edited row still fails at that row."""
    sql(chain, "UPDATE audit_log SET action = 'bed.release', hash = :h WHERE seq = 5", h="ab" * 32)
    assert check(chain).first_bad_seq == 5


# --- deletions -------------------------------------------------------------------------

def test_deleted_middle_row_is_named(chain):
    sql(chain, "DELETE FROM audit_log WHERE seq = 5")
    result = check(chain)
    assert (result.ok, result.first_bad_seq, result.rows_checked) == (False, 5, 4)
    assert "missing" in result.problem


def test_deleted_first_row_is_named(chain):
    sql(chain, "DELETE FROM audit_log WHERE seq = 1")
    assert check(chain).first_bad_seq == 1


def test_deleted_last_row_is_named(chain):
    sql(chain, f"DELETE FROM audit_log WHERE seq = {ROWS}")
    result = check(chain)
    assert (result.ok, result.first_bad_seq, result.rows_checked) == (False, ROWS, ROWS - 1)
    assert "deleted from the end" in result.problem


def test_deleted_head_row_is_reported(chain):
    sql(chain, "DELETE FROM audit_head")
    result = check(chain)
    assert not result.ok and "head" in result.problem


def test_deleted_middle_row_renumbered_is_named(chain):
    """Closing the gap (renumbering the later rows) does not hide the deletion."""
    sql(chain, "DELETE FROM audit_log WHERE seq = 5")
    # two steps: a single seq = seq - 1 could collide with the unique index mid-update
    sql(chain, "UPDATE audit_log SET seq = seq + 1000 WHERE seq > 5")
    sql(chain, "UPDATE audit_log SET seq = seq - 1001 WHERE seq > 1000")
    assert check(chain).first_bad_seq == 5


# --- reordering ------------------------------------------------------------------------

def test_swapped_seq_values_are_named(chain):
    sql(chain, "UPDATE audit_log SET seq = -1 WHERE seq = 3")
    sql(chain, "UPDATE audit_log SET seq = 3 WHERE seq = 6")
    sql(chain, "UPDATE audit_log SET seq = 6 WHERE seq = -1")
    result = check(chain)
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "reordered" in result.problem


def test_swapped_content_and_hashes_are_named(chain):
    a, b = row(chain, 3), row(chain, 6)
    sql(chain, "UPDATE audit_log SET entity_id = :e, hash = :h WHERE seq = 3", e=b.entity_id, h=b.hash)
    sql(chain, "UPDATE audit_log SET entity_id = :e, hash = :h WHERE seq = 6", e=a.entity_id, h=a.hash)
    assert check(chain).first_bad_seq == 3


def test_swapped_whole_rows_are_named(chain):
    """Every column but seq swapped (prev_hash included): the link from seq 2 breaks."""
    cols = ("at", "actor_name", "action", "entity_id", "patient_id", "detail", "prev_hash", "hash")
    a, b = row(chain, 3), row(chain, 4)
    with chain.engine.begin() as conn:
        table = AuditLog.__table__
        conn.execute(table.update().where(table.c.seq == 3).values({c: getattr(b, c) for c in cols}))
        conn.execute(table.update().where(table.c.seq == 4).values({c: getattr(a, c) for c in cols}))
    assert check(chain).first_bad_seq == 3


# --- forged rows -----------------------------------------------------------------------

def _forged(chain, seq: int, prev_hash: str, hash_: str) -> dict:
    template = row(chain, 1)
    return {"seq": seq, "at": template.at, "actor_id": None, "actor_name": "intruder",
            "action": "bed.reserve", "entity_type": "bed", "entity_id": "1", "patient_id": 100,
            "ip": None, "detail": {"ward_id": 3}, "prev_hash": prev_hash, "hash": hash_}


def test_forged_row_appended_is_named(chain):
    insert_row(chain, **_forged(chain, ROWS + 1, row(chain, ROWS).hash, "f" * 64))
    result = check(chain)
    assert (result.ok, result.first_bad_seq) == (False, ROWS + 1)


def test_forged_row_with_head_moved_and_wrong_key_is_named(chain):
    """The intruder knows the algorithm and moves the head too, but not the key."""
    values = _forged(chain, ROWS + 1, row(chain, ROWS).hash, "")
    values["hash"] = audit._digest(b"guessed-key", values, values["prev_hash"])
    insert_row(chain, **values)
    sql(chain, "UPDATE audit_head SET seq = :s, hash = :h", s=ROWS + 1, h=values["hash"])
    result = check(chain)
    assert (result.ok, result.first_bad_seq) == (False, ROWS + 1)
    assert "forged" in result.problem


def test_forged_row_inserted_in_the_middle_is_named(chain):
    sql(chain, "UPDATE audit_log SET seq = seq + 1000 WHERE seq > 5")
    sql(chain, "UPDATE audit_log SET seq = seq - 999 WHERE seq > 1000")
    insert_row(chain, **_forged(chain, 6, row(chain, 5).hash, "e" * 64))
    assert check(chain).first_bad_seq == 6


def test_forged_row_before_the_chain_is_named(chain):
    """A row with seq 0 sorts before the genesis row; it must not be skipped."""
    insert_row(chain, **_forged(chain, 0, GENESIS, "d" * 64))
    result = check(chain)
    assert (result.ok, result.first_bad_seq, result.rows_checked) == (False, 0, 0)
    assert "inserted" in result.problem


# --- the CLI names the row -------------------------------------------------------------

def test_cli_verify_broken_exits_1_naming_the_row(chain, db_url):
    sql(chain, "UPDATE audit_log SET detail = '{\"ward_id\": 4, \"n\": 3}' WHERE seq = 4")
    bad_id = row(chain, 4).id
    result = verify_cli(db_url)
    assert result.exit_code == 1
    assert f"BROKEN at seq 4 (row id {bad_id})" in result.output
    assert "3 rows verified before it" in result.output


def test_cli_verify_deleted_last_row_exits_1(chain, db_url):
    sql(chain, f"DELETE FROM audit_log WHERE seq = {ROWS}")
    result = verify_cli(db_url)
    assert result.exit_code == 1
    assert f"BROKEN at seq {ROWS}" in result.output


# --- record() --------------------------------------------------------------------------

def test_detail_is_stored_as_it_was_hashed(database):
    """Dates, Decimals and tuples are stored as the JSON they were hashed as."""
    with database.transaction() as s:
        audit.record(s, ACTOR, "bill.discount", "bill", 5,
                     detail={"on": date(2025, 3, 1), "rate": Decimal("2.5"), "ids": (1, 2)})
    assert row(database, 1).detail == {"on": "2025-03-01", "rate": "2.5", "ids": [1, 2]}
    assert check(database).ok


def test_patient_id_given_as_text_is_stored_and_hashed_as_a_number(database):
    with database.transaction() as s:
        entry = audit.record(s, ACTOR, "patient.view", "patient", "7", patient_id="7")
        assert entry.patient_id == 7 and entry.entity_id == "7"
    assert check(database).ok


def test_too_long_values_are_refused_before_anything_is_written(database):
    with pytest.raises(ValueError, match="action"):
        with database.transaction() as s:
            audit.record(s, ACTOR, "x" * 61, "bed")
    append(database, 1)
    assert check(database).rows_checked == 1


def test_detail_must_be_a_dict(database):
    with pytest.raises(TypeError):
        with database.transaction() as s:
            audit.record(s, ACTOR, "bed.reserve", "bed", detail=["not", "a", "dict"])


def test_rolled_back_record_leaves_no_gap(database):
    append(database, 2)
    with pytest.raises(RuntimeError):
        with database.transaction() as s:
            audit.record(s, ACTOR, "bed.reserve", "bed", 3)
            raise RuntimeError("the change being recorded failed")
    append(database, 1, start=3)
    with database.transaction(readonly=True) as s:
        assert list(s.execute(select(AuditLog.seq).order_by(AuditLog.seq)).scalars()) == [1, 2, 3]
    assert check(database).ok


def test_session_reused_across_transactions_chains_onto_the_latest_head(database):
    """The sessions keep objects after commit (expire_on_commit=False). A head object held
    from an earlier transaction must not be trusted: another writer moved the head since."""
    s = database.session()
    try:
        audit.record(s, ACTOR, "bed.reserve", "bed", 1)
        s.commit()
        stale_head = s.get(AuditHead, 1)  # kept alive, so it stays in the identity map
        s.commit()  # end that read (on SQLite every transaction holds the write lock)
        append(database, 1, start=2)  # another transaction appends seq 2
        entry = audit.record(s, ACTOR, "bed.reserve", "bed", 3)
        s.commit()
        assert entry.seq == 3 and stale_head.seq == 3
    finally:
        s.close()
    assert check(database).rows_checked == 3


# --- concurrency -----------------------------------------------------------------------

THREADS, PER_THREAD = 8, 20


def test_concurrent_appends_keep_one_contiguous_chain(database):
    """8 writers x 20 single-row transactions: no seq reused or skipped, chain intact.
    SQLite serialises them with BEGIN IMMEDIATE, PostgreSQL with the head row lock."""
    start, errors = threading.Barrier(THREADS), []

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(PER_THREAD):
                with database.transaction() as s:
                    audit.record(s, Actor(user_id=None, username=f"w{n}"), "bed.reserve", "bed", i,
                                 detail={"thread": n, "i": i})
        except Exception as err:  # collected: an assert in a thread would be lost
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    total = THREADS * PER_THREAD
    with database.transaction(readonly=True) as s:
        seqs = list(s.execute(select(AuditLog.seq).order_by(AuditLog.seq)).scalars())
        per_writer = {name: count for name, count in s.execute(
            select(AuditLog.actor_name, text("count(*)")).group_by(AuditLog.actor_name))}
    assert seqs == list(range(1, total + 1))
    assert per_writer == {f"w{n}": PER_THREAD for n in range(THREADS)}
    result = check(database)
    assert (result.ok, result.rows_checked) == (True, total)


def test_verify_while_others_append_never_reports_a_false_break(database):
    """verify() reads the head after the rows; appends landing in between must not look
    like rows deleted from the end."""
    append(database, 5)
    done, errors = threading.Event(), []

    def writer() -> None:
        try:
            for i in range(60):
                append(database, 1, start=100 + i)
        except Exception as err:
            errors.append(err)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    results = []
    while not done.is_set():
        results.append(check(database, batch=7))
    thread.join()
    results.append(check(database, batch=7))
    assert errors == []
    assert [r for r in results if not r.ok] == []
    assert results[-1].rows_checked == 65
