"""After-commit hooks run once, after the outermost commit: never when a savepoint is
released (the transaction still holds its locks and may yet roll back), never on rollback."""

from hms.db import after_commit


def test_hook_waits_for_the_outer_commit(database):
    ran = []
    with database.transaction() as s:
        with s.begin_nested():
            after_commit(s, lambda: ran.append("job"))
        assert ran == []  # savepoint released: not yet
        with s.begin_nested():
            pass
        assert ran == []
    assert ran == ["job"]


def test_hook_dropped_on_rollback(database):
    ran = []
    try:
        with database.transaction() as s:
            after_commit(s, lambda: ran.append("job"))
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with database.transaction() as s:
        pass
    assert ran == []


def test_inline_job_from_a_savepoint_sees_the_committed_data(database):
    """The case that failed: a job enqueued inside an engine step's savepoint."""
    from sqlalchemy import select

    from hms.org.models import Department

    seen = []
    with database.transaction() as s:
        with s.begin_nested():
            s.add(Department(code="X1", name="Dept X1"))
            s.flush()

            def job():
                with database.transaction() as other:  # a new connection, as an inline job does
                    seen.append(other.execute(select(Department.code)).scalars().all())

            after_commit(s, job)
    assert seen == [["X1"]]
