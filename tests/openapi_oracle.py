"""Checking real replies against the facade's OpenAPI document, with openapi-core and jsonschema.

``reply_errors`` says where a reply (status, headers, body) departs from the
document: openapi-core finds the operation, the documented status (or
``default``), and checks the required headers, the Content-Type and the body
against their schemas. The two replies that belong to no operation, 404 for
a path not listed and 405 for a method a listed path lacks, are checked
with jsonschema against the components the document gives them. The OpenAPI
tests and the fuzz use it as their oracle.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from facade.openapi import JSON, build_openapi
from facade.settings import FacadeSettings


@dataclass(frozen=True)
class Contract:
    """A served document, as data and as openapi-core's validator of it."""

    spec: JSON
    api: OpenAPI

    @classmethod
    def of(cls, spec: JSON) -> Contract:
        """The contract ``spec`` states; openapi-core checks the document itself on the way
        (with openapi-spec-validator), so an invalid one raises here."""
        return cls(spec, OpenAPI.from_dict(spec))


def contract(settings: FacadeSettings | None = None) -> Contract:
    """The contract the facade serves under ``settings`` (default: the shipped settings)."""
    return _contract(settings or FacadeSettings())


@functools.cache
def _contract(settings: FacadeSettings) -> Contract:
    return Contract.of(build_openapi(settings))


def reply_errors(contract: Contract, method: str, path: str, status: int,
                 headers: Mapping[str, str], body: bytes) -> list[str]:
    """Where a real reply to ``method path`` breaks ``document``: an empty list when it conforms.

    The status must be documented, every required header present and valid,
    and (except for HEAD, which has no body) the body JSON of the documented
    Content-Type, valid against the documented schema.
    """
    spec = contract.spec
    item = spec["paths"].get(path)
    if item is None or method.lower() not in item:
        return _unrouted_errors(spec, method, item is not None, status, headers, body)
    content_type = headers.get("Content-Type", "").split(";")[0].strip()
    request = MockRequest(spec["servers"][0]["url"], method, path)
    response = MockResponse(b"" if method.upper() == "HEAD" else body, status, dict(headers),
                            content_type)
    return [_explain(error) for error in contract.api.iter_response_errors(request, response)]


def _unrouted_errors(spec: JSON, method: str, path_listed: bool, status: int,
                     headers: Mapping[str, str], body: bytes) -> list[str]:
    """A reply to a path or method no operation covers: the document's 404 or 405, headers and body."""
    expected, name = (405, "MethodNotAllowed") if path_listed else (404, "NotFound")
    if status != expected:
        return [f"{method} answered {status}, not the {expected} the document gives"]
    reply = spec["components"]["responses"][name]
    errors = []
    for header_name, ref in reply["headers"].items():
        value = headers.get(header_name)
        if value is None:
            errors.append(f"header {header_name} is missing")
        else:
            errors += _schema_errors(spec, f"{ref['$ref']}/schema", value)
    if method.upper() != "HEAD":
        try:
            payload = json.loads(body, parse_constant=_not_json)
        except ValueError as exc:
            return [*errors, f"body is not JSON: {exc}"]
        errors += _schema_errors(spec, "#/components/schemas/Failure", payload)
    return errors


def _schema_errors(spec: JSON, pointer: str, instance: Any) -> list[str]:
    """Where ``instance`` breaks the schema at ``pointer`` in ``spec`` (JSON Schema 2020-12)."""
    validator = Draft202012Validator({"$ref": pointer, "components": spec["components"]},
                                     format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [f"{pointer}: {error.message}" for error in validator.iter_errors(instance)]


def _explain(error: Exception) -> str:
    """An openapi-core error, with the cause that holds the schema's own complaints."""
    return f"{type(error).__name__}: {error.__cause__ or error}"


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
