"""Nameko-style services: plain classes with a ``name``, ``@rpc`` methods and declared dependencies.

::

    class OrdersService:
        name = "orders"
        store = Dependency(OrderStore)

        @rpc(expected=(InvalidArgument, Conflict))
        def place(self, order_id: str, item: str) -> dict[str, bool]: ...

``build_service`` injects the dependencies; ``dispatch`` calls a method the
way the HTTP server does (argument and type checks, declared errors), so a
test can call an entrypoint directly without a network.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from resilience.errors import ExpectedError, InvalidArgument, MethodNotFound

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_RPC_ATTR = "__rpc_expected__"


@overload
def rpc(fn: F, /) -> F: ...
@overload
def rpc(*, expected: tuple[type[ExpectedError], ...] = ()) -> Callable[[F], F]: ...
def rpc(fn: Any = None, /, *, expected: tuple[type[ExpectedError], ...] = ()) -> Any:
    """Mark a method as an RPC entrypoint; ``expected`` lists the errors that are the caller's fault."""

    def mark(f: F) -> F:
        setattr(f, _RPC_ATTR, tuple(expected))
        return f

    return mark(fn) if fn is not None else mark


class Dependency(Generic[T]):
    """Declares something a service needs; ``build_service`` injects it.

    ``factory`` builds a default (a store, say); a dependency without one
    (a proxy to another service) must be passed in.
    """

    def __init__(self, factory: Callable[[], T] | None = None) -> None:
        self.factory = factory
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> Dependency[T]: ...
    @overload
    def __get__(self, obj: object, owner: type) -> T: ...
    def __get__(self, obj: object | None, owner: type) -> Dependency[T] | T:
        if obj is None:
            return self
        raise LookupError(f"{owner.__name__}.{self.name} was not injected: use build_service()")


class Config(Dependency[T]):
    """The service's settings, declared like any dependency (nameko's ``Config``):
    ``config = Config(MySettings)``.

    ``build_service(cls, config=settings)`` injects them; without, ``MySettings()``, the defaults.
    """

    def __init__(self, settings_type: type[T]) -> None:
        super().__init__(settings_type)


def dependencies(cls: type) -> dict[str, Dependency[Any]]:
    """The dependencies ``cls`` declares, by attribute name."""
    found: dict[str, Dependency[Any]] = {}
    for klass in reversed(cls.__mro__):
        found.update({k: v for k, v in vars(klass).items() if isinstance(v, Dependency)})
    return found


S = TypeVar("S")


def build_service(cls: type[S], **provided: Any) -> S:
    """Instantiate ``cls`` with its dependencies: those ``provided``, else from their factories."""
    declared = dependencies(cls)
    unknown = set(provided) - set(declared)
    if unknown:
        raise TypeError(f"{cls.__name__} declares no dependency {sorted(unknown)}")
    service = cls()
    for name, dep in declared.items():
        if name in provided:
            value = provided[name]
        elif dep.factory is not None:
            value = dep.factory()
        else:
            raise TypeError(f"{cls.__name__}.{name} has no default: pass it to build_service()")
        setattr(service, name, value)
    return service


Check = Callable[[Any], bool]


@dataclass(frozen=True)
class Entrypoint:
    """One ``@rpc`` method as the server sees it, with its argument checks worked out once."""

    name: str
    expected: tuple[type[ExpectedError], ...]
    required: frozenset[str]
    accepted: frozenset[str]
    any_keyword: bool
    checks: Mapping[str, tuple[Check, str]]


def entrypoints(cls: type) -> dict[str, Entrypoint]:
    """The ``@rpc`` methods of ``cls``, by name."""
    found = {}
    for name, fn in inspect.getmembers(cls, inspect.isfunction):
        if not hasattr(fn, _RPC_ATTR):
            continue
        params = list(inspect.signature(fn).parameters.values())[1:]  # drop self
        named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        hints = typing.get_type_hints(fn)
        checks = {p.name: (check, _describe(hints[p.name])) for p in named
                  if p.name in hints and (check := _checker(hints[p.name])) is not None}
        found[name] = Entrypoint(
            name=name,
            expected=getattr(fn, _RPC_ATTR),
            required=frozenset(p.name for p in named if p.default is p.empty),
            accepted=frozenset(p.name for p in named),
            any_keyword=any(p.kind is p.VAR_KEYWORD for p in params),
            checks=checks,
        )
    return found


async def dispatch(service: object, method: str, kwargs: Any,
                   table: Mapping[str, Entrypoint] | None = None) -> Any:
    """Call ``service.method(**kwargs)`` as the RPC server does.

    Raises ``MethodNotFound`` or ``InvalidArgument`` before calling anything
    when the method or its arguments are wrong, and the method's declared
    errors as they are. An ``ExpectedError`` the method did not declare is a
    bug in the service, raised as ``RuntimeError``.
    """
    table = entrypoints(type(service)) if table is None else table
    entry = table.get(method)
    if entry is None:
        name = getattr(service, "name", type(service).__name__)
        raise MethodNotFound(f"{name} has no method {method!r}")
    if not isinstance(kwargs, dict):
        raise InvalidArgument("arguments must be a JSON object of keyword arguments")
    _check_arguments(entry, kwargs)
    try:
        result = getattr(service, method)(**kwargs)
        if inspect.isawaitable(result):
            result = await result
    except entry.expected:
        raise
    except ExpectedError as exc:
        raise RuntimeError(f"{method}() raised undeclared {type(exc).__name__}: {exc}") from exc
    return result


def _check_arguments(entry: Entrypoint, kwargs: dict[str, Any]) -> None:
    missing = entry.required.difference(kwargs)
    if missing:
        raise InvalidArgument(f"{entry.name}(): missing a required argument: {min(missing)!r}")
    if not entry.any_keyword:
        unknown = kwargs.keys() - entry.accepted
        if unknown:
            raise InvalidArgument(f"{entry.name}(): got an unexpected keyword argument "
                                  f"{min(unknown)!r}")
    for key, value in kwargs.items():
        check = entry.checks.get(key)
        if check is not None and not check[0](value):
            raise InvalidArgument(f"{entry.name}(): {key} must be {check[1]}")


def _checker(hint: Any) -> Check | None:
    """A test of whether a JSON value fits a simple annotation (str, int, float, bool, list,
    dict, X | None, and the items of list[X] and dict[str, X]); ``None`` when the annotation
    admits anything."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_checker(arg) for arg in args]
        if any(part is None for part in parts):
            return None
        tests = [part for part in parts if part is not None]
        return lambda value: any(test(value) for test in tests)
    if hint is None or hint is type(None):
        return lambda value: value is None
    item = _checker(args[-1]) if origin in (list, dict) and args else None
    if origin is list and item is not None:
        return lambda value: isinstance(value, list) and all(item(v) for v in value)
    if origin is dict and item is not None:
        return lambda value: isinstance(value, dict) and all(item(v) for v in value.values())
    if origin is not None:
        hint = origin
    if hint is Any or not isinstance(hint, type):
        return None
    if hint is int:  # JSON true/false must not pass for a number
        return lambda value: type(value) is int
    if hint is float:
        return lambda value: type(value) in (int, float)
    kind = hint
    return lambda value: isinstance(value, kind)


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is None and isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("NoneType", "null")
