"""Day-end cash closing per cashier: what the system says the cashier received on a local
business date, by payment method (payments and deposits less refunds), against what the
cashier counted; then the day is locked for that cashier.

Writes the finance tables cash_closing and payment.cash_closing_id; flushes, never
commits. Locks: the closing row's unique (cashier, date) decides a race between two
closings of one day; the payment rows counted are locked FOR UPDATE before they are
summed, so a row is counted by one closing only.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from finance.models import PAYMENT_METHODS, CashClosing, Payment
from hms import audit
from hms.audit import Actor
from hms.db import config_of, utcnow
from hms.errors import Conflict, Forbidden, Invalid

MAX_COUNTED_PAISA = 10**12


def _business_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise Invalid("business_date is a date like 2025-01-31.", fields={"business_date": ["a date like 2025-01-31"]})


def today(session: Session) -> date:
    """The hospital's local date now."""
    return utcnow().astimezone(config_of(session).tz).date()


def _utc_bounds(session: Session, day: date) -> tuple[datetime, datetime]:
    tz = config_of(session).tz
    start = datetime.combine(day, time.min, tzinfo=tz).astimezone(timezone.utc)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=tz).astimezone(timezone.utc)
    return start, end


def _day_rows(session: Session, cashier_id: int, day: date, *, lock: bool = False,
              open_only: bool = True) -> list[Payment]:
    start, end = _utc_bounds(session, day)
    query = select(Payment).where(Payment.received_by_id == cashier_id, Payment.received_at >= start,
                                  Payment.received_at < end)
    if open_only:
        query = query.where(Payment.cash_closing_id.is_(None))
    if lock:
        query = query.with_for_update()
    return list(session.scalars(query.order_by(Payment.id)))


def _totals(rows: list[Payment]) -> dict[str, int]:
    totals = {m: 0 for m in PAYMENT_METHODS}
    for row in rows:
        totals[row.method] += row.signed_paisa
    return totals


def _counted(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise Invalid("counted is the amount counted per method, in paisa.", fields={"counted": ["an object"]})
    counted = {m: 0 for m in PAYMENT_METHODS}
    for method, paisa in value.items():
        if method not in PAYMENT_METHODS:
            raise Invalid(f"Unknown payment method {method!r}.", fields={f"counted.{method}": ["unknown method"]})
        if isinstance(paisa, bool) or not isinstance(paisa, int) or not 0 <= paisa <= MAX_COUNTED_PAISA:
            raise Invalid("Counted amounts are whole paisa, zero or more.",
                          fields={f"counted.{method}": ["whole paisa, zero or more"]})
        counted[method] = paisa
    return counted


def get_closing(session: Session, cashier_id: int, day: date) -> CashClosing | None:
    return session.scalar(select(CashClosing).where(CashClosing.cashier_id == cashier_id,
                                                    CashClosing.business_date == day))


def cash_day_summary(session: Session, actor: Actor, business_date: Any) -> dict:
    """The actor's day: {"business_date", "closing" (or None), "totals" by method of the
    rows not yet closed, "expected_paisa", "count" of those rows, "rows"}. Reads only."""
    day = _business_date(business_date)
    if actor.user_id is None:
        raise Forbidden("A cash day belongs to a cashier.", code="no_cashier")
    rows = _day_rows(session, actor.user_id, day)
    totals = _totals(rows)
    return {"business_date": day.isoformat(), "closing": get_closing(session, actor.user_id, day),
            "totals": totals, "expected_paisa": sum(totals.values()), "count": len(rows), "rows": rows}


def close_cash_day(session: Session, actor: Actor, business_date: Any, counted: Any) -> CashClosing:
    """Close the actor's cash day: sums the payments, deposits (plus) and refunds (minus)
    they received on that local date that no closing counted yet, by method; stores what
    they counted and the variance (counted - expected); points those rows at the closing.
    Conflict `already_closed` when the cashier closed that date already (a unique
    (cashier, date) decides a race). Locks the counted payment rows. Audited."""
    if actor.user_id is None:
        raise Forbidden("A cash day belongs to a cashier.", code="no_cashier")
    day = _business_date(business_date)
    if day > today(session):
        raise Invalid("A future day cannot be closed.", fields={"business_date": ["is in the future"]})
    counted = _counted(counted)
    if get_closing(session, actor.user_id, day) is not None:
        raise Conflict(f"Your cash for {day.isoformat()} is closed already.", code="already_closed")
    rows = _day_rows(session, actor.user_id, day, lock=True)
    totals = _totals(rows)
    expected, counted_sum = sum(totals.values()), sum(counted.values())
    closing = CashClosing(cashier_id=actor.user_id, cashier_name=actor.username, business_date=day, totals=totals,
                          counted=counted, expected_paisa=expected, counted_paisa=counted_sum,
                          variance_paisa=counted_sum - expected, payment_count=len(rows))
    try:
        with session.begin_nested():
            session.add(closing)
            session.flush()
    except IntegrityError:
        raise Conflict(f"Your cash for {day.isoformat()} is closed already.", code="already_closed") from None
    for row in rows:
        row.cash_closing_id = closing.id
    session.flush()
    audit.record(session, actor, "cash.close_day", "cash_closing", closing.id,
                 detail={"business_date": day.isoformat(), "expected_paisa": expected, "counted_paisa": counted_sum,
                         "variance_paisa": closing.variance_paisa, "rows": len(rows)})
    return closing


def list_closings(session: Session, *, cashier_id: int | None = None, business_date: Any = None,
                  limit: int = 30) -> list[CashClosing]:
    """Closings, newest day first; filtered by cashier and / or date. Reads only."""
    query = select(CashClosing)
    if cashier_id is not None:
        query = query.where(CashClosing.cashier_id == cashier_id)
    if business_date is not None:
        query = query.where(CashClosing.business_date == _business_date(business_date))
    return list(session.scalars(query.order_by(CashClosing.business_date.desc(), CashClosing.id.desc())
                                .limit(limit)))
