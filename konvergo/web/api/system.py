"""API: who am I, and System Parameters (administrators)."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Schema

from konvergo.services import parameters
from konvergo.store.models import AuditEvent, SystemParameter
from konvergo.web.api.base import api, require_admin


class MeOut(Schema):
    username: str
    email: str
    role: str
    is_administrator: bool


class ParameterIn(Schema):
    value: str


class ParameterOut(Schema):
    key: str
    value: str


@api.get("/me", response=MeOut, tags=["system"])
def me(request: HttpRequest) -> MeOut:
    user = request.user
    return MeOut(
        username=user.get_username(),
        email=getattr(user, "email", ""),
        role=getattr(user, "role", ""),
        is_administrator=bool(getattr(user, "is_administrator", False)),
    )


@api.get("/parameters", response=list[ParameterOut], tags=["system"])
def list_parameters(request: HttpRequest) -> list[ParameterOut]:
    require_admin(request)
    return [ParameterOut(key=r.key, value=r.value) for r in SystemParameter.objects.all()]


@api.put("/parameters/{key}", response=ParameterOut, tags=["system"])
def put_parameter(request: HttpRequest, key: str, body: ParameterIn) -> ParameterOut:
    require_admin(request)
    value = parameters.set_value(key, body.value)
    AuditEvent.record("parameter.saved", key, "via API", actor=request.user)
    return ParameterOut(key=parameters.clean_key(key), value=value)
