"""The class tree drawn in `factq.errors`'s docstring is the tree of its classes."""

from __future__ import annotations

import re

from factq import errors

# `│   ├── Name   what it is`: the depth is where the name starts, in steps of 4.
_BRANCH = re.compile(r"^(?P<indent>[│ ]*)(?:[├└]── )?(?P<name>[A-Z]\w+)")


def drawn_tree() -> dict[str, str | None]:
    """Each class the docstring draws, with the class it is drawn under."""
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    lines = (errors.__doc__ or "").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("FactqError"))
    for line in lines[start:]:
        match = _BRANCH.match(line)
        if match is None:
            break
        depth = 0 if line.startswith("FactqError") else len(match["indent"]) // 4 + 1
        del stack[depth:]
        parents[match["name"]] = stack[-1] if stack else None
        stack.append(match["name"])
    return parents


def real_tree() -> dict[str, str | None]:
    """Each exception class of `factq.errors`, with its base."""
    tree: dict[str, str | None] = {}
    for value in vars(errors).values():
        is_error = isinstance(value, type) and issubclass(value, errors.FactqError)
        if is_error and value.__module__ == errors.__name__:
            base = value.__bases__[0]
            tree[value.__name__] = None if value is errors.FactqError else base.__name__
    return tree


def test_the_docstring_draws_every_class_under_its_base() -> None:
    assert drawn_tree() == real_tree()


def test_the_check_reads_the_drawing() -> None:
    drawn = drawn_tree()
    assert drawn["FactqError"] is None
    assert drawn["RateLimited"] == "RetryLater"
    assert drawn["JobCancelled"] == "JobStateConflict"
    assert len(drawn) == len(real_tree()) > 15
