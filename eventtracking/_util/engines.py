"""Turn ``{'ENGINE': 'dotted.path', 'OPTIONS': {...}}`` trees from settings into objects.

The core configuration: it needs no Django. The Django tracker builds its backends and
processors with it and the system checks walk the same tree without building anything;
Celery and event-bus workers can build theirs from the same trees. All share the
resolution rules here, so a tree the checks accept is a tree the tracker can build, and
both describe a problem with the same words.

Rules:

* a dict with an ``ENGINE`` key is an object: ``ENGINE`` names a class (or any
  callable), and ``OPTIONS`` (a dict, optional) holds its keyword arguments, themselves
  built recursively;
* any other dict, list or tuple is walked, and its members are built in place;
* every other value is kept as it is;
* where a backend or a processor is expected (the top level of the settings, or the
  ``backends``/``processors`` option of an engine), a dict without ``ENGINE`` is an error
  rather than a plain value.
"""

from __future__ import annotations

import difflib
import inspect
import pkgutil
from collections.abc import Iterator, Mapping
from importlib import import_module
from typing import Any

from eventtracking.exceptions import ImproperlyConfigured

__all__ = [
    "ANY",
    "BACKEND",
    "BAD_OPTIONS",
    "CONSTRUCT",
    "DEPENDENCY",
    "ENGINE",
    "EXAMPLE",
    "IMPORT",
    "MISSING",
    "OPTIONS",
    "PROCESSOR",
    "ROLE",
    "EngineError",
    "build",
    "check_options",
    "check_role",
    "import_engine",
    "problems",
    "setting_problems",
    "unknown_options",
]

ENGINE = "ENGINE"
OPTIONS = "OPTIONS"

#: What a position in the tree must hold.
BACKEND = "backend"
PROCESSOR = "processor"
ANY = "object"

#: The problems :class:`EngineError` reports, one per system check.
MISSING = "missing"
IMPORT = "import"
ROLE = "role"
BAD_OPTIONS = "options"
CONSTRUCT = "construct"
DEPENDENCY = "dependency"

#: How alike a name must be to a misspelt one to be suggested (difflib's ratio): one
#: letter wrong or missing in a short name passes, an unrelated name does not.
GUESS_CUTOFF = 0.8

EXAMPLE = "{'ENGINE': 'eventtracking.backends.logger.LoggerBackend', 'OPTIONS': {...}}"


class EngineError(ImproperlyConfigured):
    """A node of an ENGINE/OPTIONS tree cannot be built.

    An :class:`~eventtracking.exceptions.ImproperlyConfigured`, so a ValueError, as 4.x
    raised for a bad ENGINE.

    ``where`` locates the node (``EVENT_TRACKING_BACKENDS['mongo']['OPTIONS']...``),
    ``kind`` is one of the module constants (MISSING, IMPORT, ROLE, BAD_OPTIONS,
    CONSTRUCT, DEPENDENCY: the constructor needs a package that is not installed) and
    ``engine`` is the ENGINE value, when there is one.
    """

    def __init__(self, kind: str, where: str, engine: Any, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.where = where
        self.engine = engine


def import_engine(engine: Any, where: str) -> Any:
    """Return the object that the dotted path ``engine`` names.

    Raises EngineError (MISSING) for an empty or non-string path and (IMPORT) when the
    module or the attribute cannot be found.
    """
    if not isinstance(engine, str) or not engine.strip():
        msg = (
            f"{where}: ENGINE must be a dotted path to a class, such as "
            f"'eventtracking.backends.logger.LoggerBackend'; got {engine!r}."
        )
        raise EngineError(MISSING, where, engine, msg)
    module_name, _, attribute = engine.strip().rpartition(".")
    if not module_name:
        msg = (
            f"{where}: ENGINE {engine!r} has no module part; write the full dotted path, "
            "such as 'eventtracking.backends.logger.LoggerBackend'."
        )
        raise EngineError(IMPORT, where, engine, msg)
    try:
        module = import_module(module_name)
    except ImportError as error:
        guess = _module_guess(module_name, error)
        hint = (
            f"Did you mean {guess + '.' + attribute!r}? If not, install"
            if guess
            else "Check the spelling, or install"
        )
        msg = (
            f"{where}: cannot import module {module_name!r} of ENGINE {engine!r} "
            f"({error}). {hint} the package that provides it."
        )
        raise EngineError(IMPORT, where, engine, msg) from error
    try:
        return getattr(module, attribute)
    except AttributeError:
        public = [name for name in dir(module) if not name.startswith("_")]
        close = difflib.get_close_matches(attribute, public, n=1, cutoff=GUESS_CUTOFF)
        hint = (
            f"Did you mean {module_name + '.' + close[0]!r}?" if close else "Check the class name."
        )
        msg = (
            f"{where}: module {module_name!r} has no attribute {attribute!r} "
            f"(ENGINE {engine!r}). {hint}"
        )
        raise EngineError(IMPORT, where, engine, msg) from None


def _module_guess(module_name: str, error: ImportError) -> str | None:
    """The importable module whose name is closest to ``module_name``, or None.

    Only a misspelt part of the path is corrected: when ``module_name`` exists but
    fails to import (a missing dependency), there is nothing to guess. The first part
    that is not found is compared with its siblings, the modules of its package (or
    the top-level modules, for the first part).
    """
    parts = module_name.split(".")
    prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
    if not isinstance(error, ModuleNotFoundError) or error.name not in prefixes:
        return None
    depth = prefixes.index(error.name)
    parent = ".".join(parts[:depth])
    try:
        path = import_module(parent).__path__ if parent else None
        siblings = [found.name for found in pkgutil.iter_modules(path)]
    except Exception:  # a broken parent package: no guess rather than a second error
        return None
    close = difflib.get_close_matches(parts[depth], siblings, n=1, cutoff=GUESS_CUTOFF)
    if not close:
        return None
    return ".".join([*parts[:depth], close[0], *parts[depth + 1 :]])


def check_role(target: Any, role: str, where: str, engine: str) -> None:
    """Raise EngineError (ROLE) when ``target`` cannot fill ``role``.

    Every ENGINE must be callable. A class used as a backend must define a callable
    ``send``, unless it has ``__getattr__`` (mocks and proxies make attributes on
    demand: their instance is checked by the router); a class used as a processor must
    make callable instances. A factory function is accepted as it is: what it returns
    is checked when it is called.
    """
    if not callable(target):
        msg = (
            f"{where}: ENGINE {engine!r} is a {type(target).__name__}, not a class; "
            "point ENGINE at the class itself."
        )
        raise EngineError(ROLE, where, engine, msg)
    if not inspect.isclass(target):
        return
    # Instances of a class with __getattr__ (a mock, a proxy) may make send on demand:
    # such a class is checked on its instance, when the router takes it.
    if (
        role == BACKEND
        and not callable(getattr(target, "send", None))
        and not any("__getattr__" in vars(k) for k in target.__mro__)
    ):
        msg = (
            f"{where}: ENGINE {engine!r} is not a backend: class {target.__name__} has no "
            "send(event) method."
        )
        raise EngineError(ROLE, where, engine, msg)
    # Look in the class's own MRO: getattr would find type.__call__ on any class.
    if role == PROCESSOR and not any("__call__" in vars(k) for k in target.__mro__):
        msg = (
            f"{where}: ENGINE {engine!r} is not a processor: instances of class "
            f"{target.__name__} are not callable (define __call__(self, event))."
        )
        raise EngineError(ROLE, where, engine, msg)


def check_options(target: Any, options: Any, where: str, engine: str) -> None:
    """Raise EngineError (BAD_OPTIONS) unless ``options`` fits the signature of ``target``.

    An unknown option is named, with the closest valid name and the list of valid ones;
    a missing required option is named. A constructor that takes ``**kwargs`` judges
    its own options when it is called.
    """
    if not isinstance(options, Mapping):
        msg = (
            f"{where}: OPTIONS of {engine!r} must be a dict of keyword arguments, got "
            f"{type(options).__name__} {options!r}."
        )
        raise EngineError(BAD_OPTIONS, where, engine, msg)
    bad_keys = [key for key in options if not isinstance(key, str)]
    if bad_keys:
        msg = f"{where}: OPTIONS keys of {engine!r} must be strings, got {bad_keys!r}."
        raise EngineError(BAD_OPTIONS, where, engine, msg)
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        # Some builtins and extension types have no introspectable signature; the
        # constructor itself will judge the options.
        return
    short = engine.rpartition(".")[2]
    parameters = signature.parameters.values()
    valid = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not any(p.kind is p.VAR_KEYWORD for p in parameters):
        unknown = [key for key in options if key not in valid]
        if unknown:
            msg = f"{where}: {short} has no option {unknown_options(unknown, valid)}; " + (
                f"its options are {', '.join(valid)}." if valid else "it takes no options."
            )
            raise EngineError(BAD_OPTIONS, where, engine, msg)
    try:
        signature.bind(**options)
    except TypeError as error:
        required = [
            p.name
            for p in parameters
            if p.default is p.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name not in options
        ]
        if required:
            msg = f"{where}: {short} needs the option(s) {', '.join(map(repr, required))}."
        else:
            msg = f"{where}: OPTIONS {sorted(options)} do not fit {short}: {error}."
        raise EngineError(BAD_OPTIONS, where, engine, msg) from None


def unknown_options(unknown: list[str], valid: list[str]) -> str:
    """``'hots' (did you mean 'host'?)``, for each unknown option."""
    described = []
    for name in unknown:
        close = difflib.get_close_matches(name, valid, n=1)
        described.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    return ", ".join(described)


def _member_role(key: Any, value: Any) -> str:
    """The role of the members of option ``key`` (RoutingBackend-style trees name them):
    BACKEND in a ``backends`` dict, PROCESSOR in a ``processors`` list, else ANY."""
    if key == "backends" and isinstance(value, dict) and ENGINE not in value:
        return BACKEND
    if key == "processors" and isinstance(value, (list, tuple)):
        return PROCESSOR
    return ANY


def _options_of(node: Mapping[str, Any]) -> Any:
    options = node.get(OPTIONS)
    return {} if options is None else options


def _resolve(node: Mapping[str, Any], where: str, role: str) -> tuple[Any, str]:
    engine = node.get(ENGINE)
    target = import_engine(engine, where)
    # import_engine accepted it, so it is a non-empty string.
    check_role(target, role, where, str(engine))
    return target, str(engine)


def _missing_engine(where: str, role: str) -> EngineError:
    msg = f"{where}: a {role} must be a dict with an ENGINE key, like {EXAMPLE}."
    return EngineError(MISSING, where, None, msg)


def build(node: Any, where: str, role: str = ANY) -> Any:
    """Build every ENGINE dict in ``node`` and return the resulting structure.

    ``role`` says what ``node`` must be: BACKEND or PROCESSOR positions reject a dict
    without ENGINE. Raises EngineError (ImproperlyConfigured, a ValueError) naming the
    node that failed; an exception raised by a constructor is wrapped in one
    (CONSTRUCT) and chained.
    """
    if isinstance(node, dict):
        if ENGINE in node:
            return _build_engine(node, where, role)
        if role != ANY:
            raise _missing_engine(where, role)
        return {key: build(value, f"{where}[{key!r}]") for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        built = [build(child, f"{where}[{index}]", role) for index, child in enumerate(node)]
        return built if isinstance(node, list) else tuple(built)
    return node


def _build_engine(node: Mapping[str, Any], where: str, role: str) -> Any:
    target, engine = _resolve(node, where, role)
    options = _options_of(node)
    check_options(target, options, where, engine)
    options_where = f"{where}[{OPTIONS!r}]"
    kwargs = {
        key: _build_member(key, value, f"{options_where}[{key!r}]")
        for key, value in options.items()
    }
    try:
        return target(**kwargs)
    except ImportError as error:
        # An optional dependency is missing (MongoBackend without pymongo): the message
        # of the backend's error says which extra to install.
        msg = f"{where}: {engine} needs a package that is not installed: {error}"
        raise EngineError(DEPENDENCY, where, engine, msg) from error
    except Exception as error:
        msg = f"{where}: {engine}(**OPTIONS) raised {type(error).__name__}: {error}"
        raise EngineError(CONSTRUCT, where, engine, msg) from error


def _build_member(key: Any, value: Any, where: str) -> Any:
    """Build one option value; ``backends`` and ``processors`` members are roles."""
    role = _member_role(key, value)
    if role == BACKEND:
        return {name: build(child, f"{where}[{name!r}]", BACKEND) for name, child in value.items()}
    return build(value, where, role)


def problems(node: Any, where: str, role: str = ANY) -> Iterator[EngineError]:
    """Yield every problem in ``node`` that can be found without building anything.

    It imports each ENGINE, checks its role and binds OPTIONS to its signature; it never
    calls a constructor. A node with a problem is not descended into.
    """
    if isinstance(node, dict):
        if ENGINE not in node:
            if role != ANY:
                yield _missing_engine(where, role)
                return
            for key, value in node.items():
                yield from problems(value, f"{where}[{key!r}]")
            return
        try:
            target, engine = _resolve(node, where, role)
            options = _options_of(node)
            check_options(target, options, where, engine)
        except EngineError as error:
            yield error
            return
        options_where = f"{where}[{OPTIONS!r}]"
        for key, value in options.items():
            member_where = f"{options_where}[{key!r}]"
            member_role = _member_role(key, value)
            if member_role == BACKEND:
                for name, child in value.items():
                    yield from problems(child, f"{member_where}[{name!r}]", BACKEND)
            else:
                yield from problems(value, member_where, member_role)
    elif isinstance(node, (list, tuple)):
        for index, child in enumerate(node):
            yield from problems(child, f"{where}[{index}]", role)


def setting_problems(
    backends: Any, processors: Any, backends_name: str, processors_name: str
) -> Iterator[EngineError]:
    """Yield the problems of a backends setting and a processors setting, in that order."""
    if isinstance(backends, dict):
        for name, node in backends.items():
            yield from problems(node, f"{backends_name}[{name!r}]", BACKEND)
    if isinstance(processors, (list, tuple)):
        yield from problems(processors, processors_name, PROCESSOR)
