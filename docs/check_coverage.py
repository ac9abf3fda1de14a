"""Fails when a public symbol of optax_signvar is undocumented.

Walks the ``__all__`` of ``optax_signvar``, ``optax_signvar.blocks``,
``optax_signvar.dissection``, ``optax_signvar.transform``,
``optax_signvar.research`` and ``optax_signvar.research.problems`` (a module
without ``__all__`` contributes its public functions and classes) and exits
non-zero, listing every problem, when a symbol

* has no docstring (for a module-level constant or type alias, such as the
  ``Literal`` types of ``optax_signvar.dissection``, which cannot carry one:
  neither a ``#:`` doc comment in its module nor a description in the body of
  its ``.. autodata::`` directive), or
* is not named by an autodoc directive in the ``.rst`` sources under ``docs/``
  (``.. autofunction::``, ``.. autoclass::``, ``.. autodata::``, or
  ``.. automodule::`` with ``:members:``, which covers the module's
  ``__all__``; a module itself is covered by its ``.. automodule::``), or
* is a public function whose docstring lacks ``Args:`` (when it takes
  parameters) or ``Returns:`` (unless it is annotated ``-> None``; Google
  style, as optax, writes no ``Returns:`` for a function that returns nothing).

Public functions without an ``Example:`` section are reported, not failed.

Names in directives are resolved like Sphinx does: relative to the last
``.. currentmodule::``/``.. module::``/``.. automodule::`` above them, and
compared by object identity, so ``optax_signvar.adam`` and
``optax_signvar.alias.adam`` both cover ``adam``.

Usage: ``python docs/check_coverage.py`` (from anywhere).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

import optax_signvar  # noqa: E402
from optax_signvar import blocks, dissection, research, transform  # noqa: E402
from optax_signvar.research import problems  # noqa: E402

WALKED = [optax_signvar, blocks, dissection, transform, research, problems]


def _public_names(module) -> list[str]:
    """``module.__all__``, or its public functions and classes defined in it."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and getattr(obj, "__module__", None) == module.__name__
    ]


PUBLIC = [(module, name) for module in WALKED for name in _public_names(module)]

DIRECTIVE = re.compile(
    r"^(?P<indent>\s*)\.\.\s+(?:py:)?(?P<kind>autofunction|autoclass|autodata|automodule|"
    r"currentmodule|module)::\s*(?P<target>\S+)\s*$"
)
OPTION = re.compile(r"^\s+:(?P<name>[\w-]+):")


def _resolve(dotted: str):
    """The object a dotted name refers to, or None."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _options_and_body(lines: list[str], lineno: int, indent: str) -> tuple[set[str], bool]:
    """The options of the directive on line ``lineno`` (1-based) and whether it
    has a body: text indented deeper than the directive, after its options."""
    options: set[str] = set()
    in_options = True
    for following in lines[lineno:]:
        if not following.strip():
            in_options = False
            continue
        if len(following) - len(following.lstrip()) <= len(indent):
            break
        opt = OPTION.match(following)
        if in_options and opt:
            options.add(opt["name"])
            continue
        return options, True
    return options, False


def documented_objects(rst_files):
    """ids of the objects the autodoc directives of ``rst_files`` document,
    with where each is documented, and the ids of those whose directive has a
    body (a description written in the ``.rst``)."""
    covered: dict[int, str] = {}
    described: set[int] = set()
    unresolved: list[str] = []
    for path in rst_files:
        lines = path.read_text(encoding="utf-8").splitlines()
        current = None
        for lineno, line in enumerate(lines, 1):
            match = DIRECTIVE.match(line)
            if not match:
                continue
            kind, target = match["kind"], match["target"]
            where = f"{path.relative_to(DOCS)}:{lineno}"
            if kind in ("currentmodule", "module"):
                current = None if target == "None" else target
                continue
            if kind == "automodule":
                current = target
                module = _resolve(target)
                if module is None:
                    unresolved.append(f"{where}: cannot import {target}")
                    continue
                covered.setdefault(id(module), where)
                options, _ = _options_and_body(lines, lineno, match["indent"])
                if "members" in options:
                    names = getattr(module, "__all__", None) or [
                        n for n in vars(module) if not n.startswith("_")
                    ]
                    for n in names:
                        if hasattr(module, n):
                            covered.setdefault(id(getattr(module, n)), where)
                continue
            candidates = [target] if current is None else [f"{current}.{target}", target]
            obj = next((o for o in map(_resolve, candidates) if o is not None), None)
            if obj is None:
                unresolved.append(f"{where}: cannot resolve {kind} {target}")
            else:
                covered.setdefault(id(obj), where)
                if _options_and_body(lines, lineno, match["indent"])[1]:
                    described.add(id(obj))
    return covered, described, unresolved


def _takes_parameters(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return any(name not in ("self", "cls") for name in params)


def _returns_none(fn) -> bool:
    """Whether ``fn`` is annotated ``-> None`` (no ``Returns:`` to write then)."""
    try:
        annotation = inspect.signature(fn).return_annotation
    except (TypeError, ValueError):
        return False
    return annotation is None or annotation in ("None", type(None))


def _is_data(obj) -> bool:
    """A module-level constant or type alias (no docstring of its own)."""
    return not (inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isroutine(obj))


_ATTR_DOCS: dict[str, dict] = {}


def _doc_comment(module, name: str) -> str:
    """The ``#:`` doc comment (or string after the assignment) of ``module.name``."""
    if module.__name__ not in _ATTR_DOCS:
        try:
            from sphinx.pycode import ModuleAnalyzer

            _ATTR_DOCS[module.__name__] = ModuleAnalyzer.for_module(
                module.__name__
            ).find_attr_docs()
        except Exception:  # no sphinx, or no source: nothing found
            _ATTR_DOCS[module.__name__] = {}
    return "\n".join(_ATTR_DOCS[module.__name__].get(("", name), []))


def _has_section(doc: str, section: str) -> bool:
    return re.search(rf"^\s*{section}:\s*$", doc, re.MULTILINE) is not None


def main() -> int:
    rst_files = sorted(p for p in DOCS.rglob("*.rst") if "_build" not in p.parts)
    covered, described, unresolved = documented_objects(rst_files)
    errors: list[str] = [f"unresolved directive: {u}" for u in unresolved]
    no_example: list[str] = []
    for module, name in PUBLIC:
        qualname = f"{module.__name__}.{name}"
        obj = getattr(module, name, None)
        if obj is None:
            errors.append(f"{qualname}: listed in __all__ but not defined")
            continue
        if _is_data(obj):
            doc = _doc_comment(module, name)
            if not doc.strip() and id(obj) not in described:
                errors.append(
                    f"{qualname}: neither a '#:' doc comment nor a description in its "
                    "autodata directive"
                )
        else:
            doc = inspect.getdoc(obj) or ""
            if not doc.strip():
                errors.append(f"{qualname}: no docstring")
        if id(obj) not in covered:
            errors.append(f"{qualname}: not in any autodoc directive of docs/*.rst")
        if inspect.isfunction(obj) and doc:
            if _takes_parameters(obj) and not _has_section(doc, "Args"):
                errors.append(f"{qualname}: docstring has no 'Args:' section")
            if not _returns_none(obj) and not _has_section(doc, "Returns"):
                errors.append(f"{qualname}: docstring has no 'Returns:' section")
            if not _has_section(doc, "Examples?"):
                no_example.append(qualname)

    print(f"checked {len(PUBLIC)} public symbols against {len(rst_files)} .rst files")
    if no_example:
        print(
            f"\nnote: {len(no_example)} public functions have no 'Example:' section (not an error):"
        )
        for q in no_example:
            print(f"  {q}")
    if errors:
        print(f"\nFAILED: {len(errors)} problem(s):", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        return 1
    print("\nOK: every public symbol has a docstring and an autodoc entry.")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.exit(main())
