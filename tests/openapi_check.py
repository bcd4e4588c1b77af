"""Checking real replies against the facade's OpenAPI document, without a JSON Schema dependency.

``reply_errors`` says where a reply (status, headers, body) departs from the
document, using ``documented_response`` to find the documented reply and
``schema_errors``, a checker for exactly the subset of JSON Schema the
document uses (it refuses keywords it does not know rather than ignore them).
The OpenAPI tests and the fuzz use it as their oracle.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from facade.openapi import JSON, UUID_PATTERN


def resolve(document: JSON, node: JSON) -> JSON:
    """``node``, or what its local ``$ref`` (``#/...``) points to in ``document``."""
    while "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise ValueError(f"only local references are supported, not {ref!r}")
        target: Any = document
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def documented_response(document: JSON, path: str, method: str, status: int) -> JSON | None:
    """The response object ``document`` gives for ``method path`` answering ``status``.

    404 and 405 come from the shared components (they answer any path or
    method not listed); otherwise the operation's own response for the status,
    else its ``default``. ``None`` if the document does not cover the reply.
    """
    responses = document["components"]["responses"]
    operations = document["paths"].get(path)
    operation = None if operations is None else operations.get(method.lower())
    if operation is None:
        if status == 404 and operations is None:
            return resolve(document, responses["NotFound"])
        if status == 405 and operations is not None:
            return resolve(document, responses["MethodNotAllowed"])
        return None
    reply = operation["responses"].get(str(status), operation["responses"].get("default"))
    return None if reply is None else resolve(document, reply)


def reply_errors(document: JSON, method: str, path: str, status: int,
                 headers: Mapping[str, str], body: bytes) -> list[str]:
    """Where a real reply to ``method path`` breaks ``document``: an empty list when it conforms.

    The status must be documented, every required header present and valid,
    and (except for HEAD, which has no body) the body JSON valid against the
    documented schema.
    """
    reply = documented_response(document, path, method, status)
    if reply is None:
        return [f"{method} {path} -> {status} is not documented"]
    errors = []
    for name, header in reply.get("headers", {}).items():
        header = resolve(document, header)
        value = headers.get(name)
        if value is None:
            if header.get("required"):
                errors.append(f"header {name} is missing")
            continue
        errors += schema_errors(value, header["schema"], document, f"header {name}")
    content = reply.get("content", {}).get("application/json")
    if content is None or method.upper() == "HEAD":
        return errors
    if headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
        return [*errors, f"Content-Type is {headers.get('Content-Type')!r}, not application/json"]
    try:
        payload = json.loads(body, parse_constant=_not_json)
    except ValueError as exc:
        return [*errors, f"body is not JSON: {exc}"]
    return errors + schema_errors(payload, content["schema"], document)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_ANNOTATIONS = frozenset({"description", "title", "default", "examples", "format", "$comment"})
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "integer": (int,), "number": (int, float), "null": (type(None),),
}


def _is_type(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    if name == "number" and isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, _TYPES[name])


def schema_errors(instance: Any, schema: JSON, document: JSON, where: str = "$") -> list[str]:
    """Where ``instance`` breaks ``schema``: an empty list when it conforms.

    Supports the JSON Schema keywords this document uses (``$ref``, ``type``,
    ``const``, ``enum``, ``required``, ``properties``, ``additionalProperties``,
    ``items``, ``minLength``, ``maxLength``, ``minimum``, ``maximum``,
    ``pattern``, ``anyOf``; ``format: uuid`` is checked too) and raises
    ``ValueError`` on any other keyword rather than ignoring it.
    """
    schema = resolve(document, schema)
    errors: list[str] = []
    unknown = set(schema) - _ANNOTATIONS - {
        "type", "const", "enum", "required", "properties", "additionalProperties", "items",
        "minLength", "maxLength", "minimum", "maximum", "pattern", "anyOf"}
    if unknown:
        raise ValueError(f"{where}: unsupported schema keywords {sorted(unknown)}")
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(instance, name) for name in names):
            return [f"{where}: {instance!r:.60} is not of type {schema['type']}"]
    if "const" in schema and not _same(instance, schema["const"]):
        errors.append(f"{where}: {instance!r:.60} is not {schema['const']!r}")
    if "enum" in schema and not any(_same(instance, option) for option in schema["enum"]):
        errors.append(f"{where}: {instance!r:.60} is not one of {schema['enum']!r}")
    if "anyOf" in schema and not any(
            not schema_errors(instance, option, document, where) for option in schema["anyOf"]):
        errors.append(f"{where}: {instance!r:.60} matches none of anyOf")
    if isinstance(instance, str):
        errors += _string_errors(instance, schema, where)
    if _is_type(instance, "number"):
        if "minimum" in schema and instance < schema["minimum"]:
            errors.append(f"{where}: {instance} < {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            errors.append(f"{where}: {instance} > {schema['maximum']}")
    if isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            errors += schema_errors(item, schema["items"], document, f"{where}[{i}]")
    if isinstance(instance, dict):
        errors += _object_errors(instance, schema, document, where)
    return errors


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``1`` is not ``true``."""
    if _is_type(a, "number") and _is_type(b, "number"):
        return bool(a == b)
    return type(a) is type(b) and a == b


def _string_errors(value: str, schema: JSON, where: str) -> list[str]:
    errors = []
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{where}: shorter than {schema['minLength']}")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{where}: longer than {schema['maxLength']}")
    if "pattern" in schema and not _matches(schema["pattern"], value):
        errors.append(f"{where}: {value!r:.60} does not match {schema['pattern']}")
    if schema.get("format") == "uuid" and not re.fullmatch(UUID_PATTERN, value):
        errors.append(f"{where}: {value!r:.60} is not a canonical UUID")
    return errors


def _matches(pattern: str, value: str) -> bool:
    """ECMA-style ``pattern`` search; ``^...$`` must match the whole string (no newline before ``$``)."""
    if pattern.startswith("^") and pattern.endswith("$"):
        return re.fullmatch(pattern[1:-1], value) is not None
    return re.search(pattern, value) is not None


def _object_errors(value: JSON, schema: JSON, document: JSON, where: str) -> list[str]:
    errors = [f"{where}: missing {name!r}" for name in schema.get("required", []) if name not in value]
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            errors += schema_errors(item, properties[name], document, f"{where}.{name}")
        elif extra is False:
            errors.append(f"{where}: unexpected property {name!r}")
        elif isinstance(extra, dict):
            errors += schema_errors(item, extra, document, f"{where}.{name}")
    return errors
