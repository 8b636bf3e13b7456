"""The demo catalogues agree across departments: every lab test and consultation the OPD
pathway can charge has a price, so a demo visit never stops at 'Charge the tests'."""

from sqlalchemy import select


def test_every_lab_test_has_a_cash_tariff(clinic, database):
    from departments.lab.models import LabTest
    from finance import services as finance

    with database.transaction(readonly=True) as s:
        tests = s.execute(select(LabTest).where(LabTest.active.is_(True))).scalars().all()
        assert len(tests) >= 40
        missing = []
        for t in tests:
            try:
                assert finance.price_for(s, t.tariff_code, "cash") > 0
            except Exception:  # noqa: BLE001 - collect every missing tariff, not just the first
                missing.append(t.tariff_code)
        assert missing == []
