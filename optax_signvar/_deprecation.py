"""Old spellings of renamed arguments, kept working for one release with a warning.

0.2 gave each choice one name across ``dissect``, the named optimizers, the
blocks and ``diagnostics`` (see CHANGELOG.md). A call that uses an old spelling
still works, and warns with ``DeprecationWarning`` saying what to write instead.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])

_REMOVAL = "it will be removed in the next release"


def renamed_arguments(**renames: str | tuple[str, Mapping[Any, Any]]) -> Callable[[F], F]:
    """Accepts each old keyword ``old=value`` as its new name, with a warning.

    ``renames`` maps an old keyword to its new name, or to ``(new name, {old
    value: new value})`` where the values were renamed too. The wrapped
    function keeps its signature (``inspect.signature``, Sphinx, editors).
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, spec in renames.items():
                if old not in kwargs:
                    continue
                new, values = (spec, {}) if isinstance(spec, str) else spec
                if new in kwargs:
                    raise TypeError(f"{fn.__name__}() got both {old!r} (the old name) and {new!r}.")
                value = kwargs.pop(old)
                hint = ""
                if _hashable(value) and value in values:
                    value = values[value]
                    hint = f" ({new}={value!r})"
                warnings.warn(
                    f"{fn.__name__}(): the argument {old!r} is now {new!r}{hint}; {_REMOVAL}.",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = value
            return fn(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


def renamed_value(function: str, argument: str, value: Any, renames: Mapping[Any, Any]) -> Any:
    """``value``, or its new spelling with a warning when it is an old one."""
    if _hashable(value) and value in renames:
        new = renames[value]
        warnings.warn(
            f"{function}(): {argument}={value!r} is now {argument}={new!r}; {_REMOVAL}.",
            DeprecationWarning,
            stacklevel=3,
        )
        return new
    return value


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
