"""Marshmallow schemas of the auth API: request bodies in, users and tokens out.

Input schemas check the shape (types, required fields, no unknown fields: a typo such as
"role" for "roles" is a 422 naming the field rather than silently ignored). The rules
(username format, password strength, known roles and scopes) live in services.py, so the
JSON API and the HTML forms refuse the same things with the same messages.
"""

from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validates_schema

from hms.auth.roles import ROLES


class _Input(Schema):
    class Meta:
        unknown = RAISE


def _id_list() -> fields.List:
    return fields.List(fields.Integer(), load_default=list)


class LoginIn(_Input):
    username = fields.String(required=True)
    password = fields.String(required=True)


class UserCreateIn(_Input):
    username = fields.String(required=True)
    full_name = fields.String(required=True)
    password = fields.String(required=True)
    roles = fields.List(fields.String(), load_default=list)
    department_ids = _id_list()
    ward_ids = _id_list()


class UserUpdateIn(_Input):
    """PATCH: every field optional; an absent field is left as it is."""

    full_name = fields.String()
    roles = fields.List(fields.String())
    department_ids = fields.List(fields.Integer())
    ward_ids = fields.List(fields.Integer())
    active = fields.Boolean()

    @validates_schema
    def _something_to_change(self, data, **kwargs):
        if not data:
            raise ValidationError("Send at least one field to change.", field_name="_schema")


class PasswordIn(_Input):
    password = fields.String(required=True)


class TokenIn(_Input):
    name = fields.String(required=True)


class UserOut(Schema):
    id = fields.Integer()
    username = fields.String()
    full_name = fields.String()
    roles = fields.Function(lambda user: sorted(user.role_names))
    department_ids = fields.Function(lambda user: sorted(user.department_ids))
    ward_ids = fields.Function(lambda user: sorted(user.ward_ids))
    active = fields.Boolean()
    is_demo = fields.Boolean()
    created_at = fields.DateTime()
    last_login_at = fields.DateTime()
    password_changed_at = fields.DateTime()


class TokenOut(Schema):
    """A token's metadata. The secret itself is never stored, so it cannot be shown here."""

    id = fields.Integer()
    user_id = fields.Integer()
    name = fields.String()
    prefix = fields.String()
    created_at = fields.DateTime()
    created_by_id = fields.Integer(allow_none=True)
    last_used_at = fields.DateTime()
    revoked_at = fields.DateTime()
    active = fields.Function(lambda token: token.revoked_at is None)


def roles_json() -> list[dict]:
    """Every role with its label, in the order of hms.auth.roles.ROLES."""
    return [{"name": name, "label": label} for name, label in ROLES.items()]


user_out = UserOut()
token_out = TokenOut()
