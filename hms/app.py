"""The application factory: configuration, database, auth, CSRF, errors, blueprints, CLI."""

from __future__ import annotations

import importlib
import logging
import secrets
from datetime import timedelta

from flask import Flask, g, request
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import select
from sqlalchemy.exc import OperationalError, ProgrammingError

from hms.config import Config, ConfigError
from hms.db import Database, import_all_models
from hms.errors import BadRequest

csrf = CSRFProtect()

# Each module defines `bp`, a Blueprint. Order does not matter.
BLUEPRINTS = (
    "hms.web.routes",
    "hms.auth.routes",
    "hms.patients.routes",
    "hms.web.audit_routes",
    "hms.workflow.routes",
    "hms.workflow.editor_routes",
    "departments.opd.routes",
    "departments.lab.routes",
    "inventory.routes",
    "finance.routes",
    "journeys.opd",
    "wards.routes",
    "wards.nursing_routes",
    "journeys.inpatient",
)

# Modules whose import registers service-task operations (see hms.workflow.operations).
OPERATION_MODULES: tuple[str, ...] = (
    "departments.opd.operations",
    "departments.lab.operations",
    "inventory.operations",
    "finance.operations",
    "wards.operations",
    "wards.nursing_operations",
)

_MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
# API endpoints that take a BPMN XML body (the pathway editor saves drafts as XML). Like
# JSON, application/xml and text/xml are not CORS-safelisted content types: a cross-site
# page cannot send them without a CORS preflight, which HMS never grants, so these need no
# CSRF token either. A plain form post (urlencoded, multipart, text/plain) is still refused.
_XML_ENDPOINTS = {"pathways.api_put_draft"}
_XML_TYPES = ("application/xml", "text/xml")
_DEV_SECRET = "hms-development-only-secret-key-not-for-production"


class HmsFlask(Flask):
    """Commits the request's transaction as part of dispatch, so a failing commit (a
    uniqueness race, a serialization failure) goes through the error handlers like any
    other refusal instead of surfacing after the response was built."""

    def dispatch_request(self):
        rv = super().dispatch_request()
        sess = g.get("db_session")
        if sess is not None and not g.get("hms_failed"):
            sess.commit()
        return rv


def create_app(config: Config | None = None, database: Database | None = None, *,
               sync_pathways: bool = True) -> Flask:
    config = config or Config.from_env()
    logging.basicConfig(level=config.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = HmsFlask("hms", template_folder="web/templates", static_folder="web/static",
                root_path=str(__import__("pathlib").Path(__file__).parent))
    app.config.update(
        SECRET_KEY=config.secret_key or (_DEV_SECRET if config.env == "development" else secrets.token_hex(32)),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.is_production,
        SESSION_COOKIE_NAME="hms_session",
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SECURE=config.is_production,
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=config.idle_timeout_minutes),
        MAX_CONTENT_LENGTH=config.max_upload_mb * 1024 * 1024,
        WTF_CSRF_CHECK_DEFAULT=False,  # checked in _guard_requests: forms yes, JSON API no
        WTF_CSRF_TIME_LIMIT=None,
        JSON_SORT_KEYS=False,
        TESTING=config.env == "test",
    )
    app.extensions["hms_config"] = config
    if config.trusted_proxies:
        # Behind nginx: take the client address from X-Forwarded-For, so the audit log and
        # the login lockout see the workstation, not the proxy.
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.trusted_proxies, x_proto=config.trusted_proxies)
    import_all_models()
    db = database or Database(config)
    app.extensions["hms_db"] = db
    from hms import jobs

    jobs.init(config, db)

    from hms.auth import wiring
    from hms.web import errors, filters

    wiring.init_app(app)
    csrf.init_app(app)
    errors.init_app(app)
    filters.init_app(app)
    _register_request_hooks(app)
    for module_name in BLUEPRINTS:
        app.register_blueprint(importlib.import_module(module_name).bp)

    from hms.cli import register_cli

    register_cli(app)
    if config.is_production:
        _refuse_demo_accounts(db)
    prepare_workflows(config, db, sync=sync_pathways)
    return app


def prepare_workflows(config: Config, db: Database, *, sync: bool = True) -> None:
    """Register operations and the lint, then (sync) publish shipped pathways that are new or changed."""
    from hms.workflow import lint, messages, operations, specs  # noqa: F401 (messages registers its job)

    operations.register_domain_operations(OPERATION_MODULES)
    from journeys import billing, inpatient, opd as opd_journey

    billing.register()
    opd_journey.register()
    inpatient.register()
    lint.register(config.forms_dir)
    if not sync:
        return
    log = logging.getLogger(__name__)
    failures: dict[str, str] = {}
    try:
        with db.transaction() as session:
            published = specs.sync_shipped(session, config.workflows_dir, failures=failures)
    except (OperationalError, ProgrammingError):
        log.warning("workflow tables missing: run `hms db upgrade`")
        return
    for row in published:
        log.info("published shipped pathway %s v%s", row.key, row.version)
    for key, reason in failures.items():
        # The previous version (if any) keeps running; `hms workflows validate` shows the same.
        log.error("shipped pathway %s was not published: %s", key, reason)


def _refuse_demo_accounts(db: Database) -> None:
    from hms.auth.models import User

    try:
        with db.transaction(readonly=True) as s:
            demo = s.execute(select(User.username).where(User.is_demo.is_(True), User.active.is_(True))).first()
    except (OperationalError, ProgrammingError):
        return  # no schema yet: `hms db upgrade` has not run
    if demo:
        raise ConfigError("Demo accounts are active; deactivate them before running with HMS_ENV=production.")


def _register_request_hooks(app: Flask) -> None:
    @app.before_request
    def _guard_requests():
        if request.method not in _MUTATING:
            return
        if request.path.startswith("/api/"):
            # JSON bodies cannot be sent cross-site without CORS, so the API needs no CSRF token.
            if request.headers.get("Authorization", "").startswith("Bearer "):
                return
            if request.content_length and not request.is_json and not (
                    request.endpoint in _XML_ENDPOINTS and request.mimetype in _XML_TYPES):
                raise BadRequest("Send JSON with Content-Type: application/json.", code="json_required")
            if not request.content_length and request.headers.get("Content-Type", "").startswith(
                    ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")):
                raise BadRequest("Send JSON with Content-Type: application/json.", code="json_required")
            return
        csrf.protect()

    @app.after_request
    def _headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.teardown_request
    def _close(exc):
        sess = g.pop("db_session", None)
        if sess is not None:
            if exc is not None or g.get("hms_failed"):
                sess.rollback()
            sess.close()
