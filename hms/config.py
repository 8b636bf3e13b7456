"""Configuration read from HMS_* environment variables, validated once at start.

Nothing here runs at import time: `Config.from_env()` is called by the app factory and
the CLI. A bad value stops the start with a message that names the variable.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ENVIRONMENTS = ("development", "test", "production")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(RuntimeError):
    """A configuration value is missing or invalid; the message names the variable."""


def _default_db_url() -> str:
    instance = PROJECT_ROOT / "instance"
    return f"sqlite:///{instance / 'hms.db'}"


@dataclass(frozen=True)
class Config:
    """Every HMS_* setting. README.md lists them with their defaults."""

    env: str = "development"  # HMS_ENV
    database_url: str = field(default_factory=_default_db_url)  # HMS_DATABASE_URL
    redis_url: str | None = None  # HMS_REDIS_URL; unset: jobs run inline after commit
    secret_key: str | None = None  # HMS_SECRET_KEY; required in production
    audit_key: str | None = None  # HMS_AUDIT_KEY; HMAC key of the audit chain (default: secret key)
    host: str = "127.0.0.1"  # HMS_HOST
    port: int = 5000  # HMS_PORT
    timezone: str = "Asia/Karachi"  # HMS_TIMEZONE
    currency: str = "PKR"  # HMS_CURRENCY
    mrn_format: str = "HMS-{n:06d}"  # HMS_MRN_FORMAT
    idle_timeout_minutes: int = 30  # HMS_IDLE_TIMEOUT_MINUTES
    lockout_threshold: int = 10  # HMS_LOCKOUT_THRESHOLD failed logins ...
    lockout_window_minutes: int = 15  # HMS_LOCKOUT_WINDOW_MINUTES ... within this window
    max_upload_mb: int = 8  # HMS_MAX_UPLOAD_MB
    workflows_dir: str = str(PROJECT_ROOT / "workflows")  # HMS_WORKFLOWS_DIR
    forms_dir: str = str(PROJECT_ROOT / "forms")  # HMS_FORMS_DIR
    script_time_limit_ms: int = 500  # HMS_SCRIPT_TIME_LIMIT_MS per sandboxed evaluation
    timer_poll_seconds: int = 15  # HMS_TIMER_POLL_SECONDS (dev server thread, worker)
    log_level: str = "INFO"  # HMS_LOG_LEVEL
    trusted_proxies: int = 0  # HMS_TRUSTED_PROXIES: reverse proxies in front (X-Forwarded-For/-Proto)

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def effective_audit_key(self) -> bytes:
        key = self.audit_key or self.secret_key or "hms-dev-audit-key"
        return key.encode()

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> "Config":
        """Read HMS_* variables, apply overrides (tests), validate, return a frozen Config."""
        environ = os.environ if environ is None else environ
        values: dict = {}
        for f in fields(cls):
            raw = environ.get("HMS_" + f.name.upper())
            if raw is None or raw == "":
                continue
            if f.type in ("int", int):
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise ConfigError(f"HMS_{f.name.upper()} must be a whole number, got {raw!r}") from None
            else:
                values[f.name] = raw
        values.update(overrides)
        config = cls(**values)
        config.validate()
        return config

    def with_overrides(self, **overrides) -> "Config":
        config = replace(self, **overrides)
        config.validate()
        return config

    def validate(self) -> None:
        if self.env not in ENVIRONMENTS:
            raise ConfigError(f"HMS_ENV must be one of {', '.join(ENVIRONMENTS)}, got {self.env!r}")
        if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", self.database_url):
            raise ConfigError("HMS_DATABASE_URL must be a sqlite:// or postgresql:// URL")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("HMS_REDIS_URL must be a redis:// URL")
        if self.is_production and not self.secret_key:
            raise ConfigError("HMS_SECRET_KEY is required when HMS_ENV=production")
        if self.secret_key is not None and self.is_production and len(self.secret_key) < 32:
            raise ConfigError("HMS_SECRET_KEY must be at least 32 characters in production")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"HMS_TIMEZONE {self.timezone!r} is not a known time zone") from None
        if not (1 <= self.port <= 65535):
            raise ConfigError("HMS_PORT must be between 1 and 65535")
        if not (0 <= self.trusted_proxies <= 5):
            raise ConfigError("HMS_TRUSTED_PROXIES must be between 0 and 5")
        for name in ("idle_timeout_minutes", "lockout_threshold", "lockout_window_minutes",
                     "max_upload_mb", "script_time_limit_ms", "timer_poll_seconds"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"HMS_{name.upper()} must be positive")
        try:
            self.mrn_format.format(n=1)
        except (KeyError, IndexError, ValueError):
            raise ConfigError("HMS_MRN_FORMAT must be a format string using {n}, e.g. HMS-{n:06d}") from None
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("HMS_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
