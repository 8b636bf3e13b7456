"""Every route states who may use it: a view without a declared permission would be open
to anyone logged in (or to everyone) by accident."""

from __future__ import annotations

import pytest

from hms.auth.permissions import AUTHENTICATED, PUBLIC, all_permissions, declared_permission, requires


def test_every_view_declares_a_permission(app):
    offenders = sorted(
        f"{sorted(rule.methods - {'HEAD', 'OPTIONS'})} {rule.rule} -> {rule.endpoint}"
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static" and declared_permission(app.view_functions[rule.endpoint]) is None)
    assert not offenders, ("views with neither @requires(...) nor @public:\n  " + "\n  ".join(offenders))


def test_every_declared_permission_is_defined(app):
    known = set(all_permissions()) | {PUBLIC, AUTHENTICATED}
    undefined = sorted(
        f"{rule.rule}: {declared_permission(app.view_functions[rule.endpoint])}"
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static" and declared_permission(app.view_functions[rule.endpoint]) not in known)
    assert not undefined, f"views naming permissions that were never defined: {undefined}"


def test_requires_refuses_an_undefined_permission():
    with pytest.raises(ValueError, match="not defined"):
        requires("no.such.permission")

