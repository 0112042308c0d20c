"""The registry of search methods: ``train.method`` in a search config, ``--method`` on the
command line.

A method is one module holding a :class:`~autoseg.search.methods.base.SearchMethod` subclass
(with its ``Settings`` dataclass) and one :func:`register_method` line below. The search loop,
the tools and the tests find it here, by name.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from autoseg.config import config_problems, from_dict
from autoseg.utils.errors import UserError
from autoseg.search.methods.base import Evaluator, SearchMethod, SearchSchedule, UpdateTools
from autoseg.search.methods.darts import Darts
from autoseg.search.methods.darts_pt import DartsPt
from autoseg.search.methods.drnas import Drnas
from autoseg.search.methods.gdas import Gdas
from autoseg.search.methods.random_ws import RandomWeightSharing
from autoseg.search.network import SearchNetwork

__all__ = ["SEARCH_METHODS", "Evaluator", "SearchMethod", "SearchSchedule", "UpdateTools", "build_method",
           "get_method", "list_methods", "method_defaults", "method_settings", "register_method"]

SEARCH_METHODS: dict[str, type[SearchMethod]] = {}
"""Every registered search method, by name."""


def register_method(method: type[SearchMethod]) -> type[SearchMethod]:
    """Register ``method`` under its ``name`` (a second method of the same name is an error)."""
    if method.name in SEARCH_METHODS:
        raise ValueError(f"a search method named {method.name!r} is registered already")
    SEARCH_METHODS[method.name] = method
    return method


def list_methods() -> list[str]:
    """The registered methods' names, in registration order."""
    return list(SEARCH_METHODS)


def get_method(name: str) -> type[SearchMethod]:
    """The method registered as ``name``, or a UserError listing the registered ones."""
    if name not in SEARCH_METHODS:
        raise UserError(f"unknown search method {name!r}; registered methods: {', '.join(SEARCH_METHODS)}")
    return SEARCH_METHODS[name]


def method_settings(name: str, options: dict[str, Any] | None) -> Any:
    """The settings of method ``name`` from a config's ``method_options``: unknown keys, wrong
    types and values out of range are UserErrors naming the key."""
    settings_type = get_method(name).Settings
    try:
        settings = from_dict(settings_type, options or {}, "method_options")
    except UserError as error:
        raise UserError(f"{error} (settings of search method {name!r})") from None
    problems = config_problems(settings, "method_options")
    if problems:
        raise UserError(f"{'; '.join(problems)} (settings of search method {name!r})")
    return settings


def method_defaults(name: str) -> dict[str, Any]:
    """The default settings of method ``name`` (its paper's), as plain data."""
    return dataclasses.asdict(get_method(name).Settings())


def build_method(name: str, options: dict[str, Any] | None, network: SearchNetwork,
                 schedule: SearchSchedule) -> SearchMethod:
    """Method ``name`` with its settings from ``options`` on ``network``, checked for the search
    ``schedule`` (a UserError says what does not fit)."""
    method = get_method(name)(method_settings(name, options), network, schedule)
    problem = method.check()
    if problem:
        raise UserError(f"method_options: {problem}")
    return method


for _method in (Darts, Gdas, DartsPt, RandomWeightSharing, Drnas):
    register_method(_method)
