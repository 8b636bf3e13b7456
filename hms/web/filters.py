"""Jinja filters: local time display, money in PKR, ages."""

from __future__ import annotations

from datetime import date, datetime

from flask import Flask


def init_app(app: Flask) -> None:
    config = app.extensions["hms_config"]
    tz = config.tz

    @app.template_filter("localtime")
    def localtime(value: datetime | None, fmt: str = "%d %b %Y %H:%M") -> str:
        if value is None:
            return ""
        return value.astimezone(tz).strftime(fmt)

    @app.template_filter("money")
    def money(paisa: int | None) -> str:
        if paisa is None:
            return ""
        sign = "-" if paisa < 0 else ""
        rupees, p = divmod(abs(int(paisa)), 100)
        return f"{sign}{config.currency} {rupees:,}.{p:02d}"

    @app.template_filter("iso_local")
    def iso_local(value: str | None, fmt: str = "%d %b %Y %H:%M") -> str:
        """An ISO timestamp (as the JSON shapes carry it) shown in local time."""
        if not value:
            return ""
        return localtime(datetime.fromisoformat(value), fmt)

    @app.template_filter("dmy")
    def dmy(value: date | None) -> str:
        return value.strftime("%d %b %Y") if value else ""

    @app.template_filter("context_value")
    def context_value(value) -> str:
        """A task-data value for people: alerts and problems as sentences, ids left out."""
        if isinstance(value, dict):
            for key in ("alerts", "problems"):
                if value.get(key):
                    return "; ".join(str(a.get("message") or a) if isinstance(a, dict) else str(a)
                                     for a in value[key])
            shown = {k: v for k, v in value.items() if not k.endswith("_id") and v not in (None, "", [], {})}
            return ", ".join(f"{k.removesuffix('_paisa').replace('_', ' ')}: "
                             f"{money(v) if k.endswith('_paisa') and isinstance(v, int) else context_value(v)}"
                             for k, v in shown.items()) or "—"
        if isinstance(value, list):
            return ", ".join(context_value(v) for v in value) or "none"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return str(value)

    @app.context_processor
    def _globals():
        from hms.web.nav import nav_items

        return {"nav_items": nav_items, "hms_currency": config.currency, "can": _can}


def _can(permission: str) -> bool:
    """Whether the signed-in user holds a role of `permission`: pages show only the actions
    their user may take (the route still checks)."""
    from flask_login import current_user

    from hms.auth.permissions import roles_for
    from hms.auth.roles import effective_roles

    if not current_user.is_authenticated:
        return False
    roles = effective_roles(current_user.user.role_names)
    return bool(roles & (roles_for(permission) | {"admin"}))
