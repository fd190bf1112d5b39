"""The exception tree drawn in ``faxbridge.errors`` is the real one: every class it draws exists
where it says, under the parent it is drawn under, and every ``FaxbridgeError`` is drawn."""

from __future__ import annotations

import importlib
import pkgutil
import re

import faxbridge
from faxbridge import errors

_NODE = re.compile(r"^(?P<indent>[ │]*)[├└]── (?P<name>\w+)\s+(?:(?P<module>[\w/]+)\.py:)?")


def _drawn() -> dict[str, tuple[type[BaseException], str | None]]:
    """Each class the docstring draws: the class (found where the drawing says) and its parent's name."""
    doc = errors.__doc__ or ""
    tree = doc[doc.index("FaxbridgeError\n"):doc.index("Outside the tree")]
    drawn: dict[str, tuple[type[BaseException], str | None]] = {
        "FaxbridgeError": (errors.FaxbridgeError, None)}
    parents = ["FaxbridgeError"]
    for line in tree.splitlines()[1:]:
        m = _NODE.match(line.strip("\n")[4:])
        if not m:
            continue
        depth = len(m["indent"]) // 4
        module = importlib.import_module(f"faxbridge.{m['module'].replace('/', '.')}" if m["module"]
                                         else "faxbridge.errors")
        cls = getattr(module, m["name"])
        drawn[m["name"]] = (cls, parents[depth])
        del parents[depth + 1:]
        parents.append(m["name"])
    return drawn


def test_every_class_drawn_is_where_and_under_what_the_drawing_says() -> None:
    drawn = _drawn()
    assert len(drawn) >= 22          # the parse found the drawing
    for name, (cls, parent) in drawn.items():
        assert cls.__name__ == name
        if parent is not None:
            assert cls.__bases__ == (drawn[parent][0],), f"{name} is drawn under {parent}"


def _subclasses(cls: type[BaseException]) -> set[type[BaseException]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_faxbridge_error_is_drawn() -> None:
    for info in pkgutil.walk_packages(faxbridge.__path__, "faxbridge."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    drawn = {cls for cls, _ in _drawn().values()}
    ours = {c for c in _subclasses(errors.FaxbridgeError) if c.__module__.startswith("faxbridge.")}
    assert ours - drawn == set()


def test_the_smtp_refusal_is_a_faxbridge_error() -> None:
    from faxbridge.ingress.smtp import policy

    assert issubclass(policy.Refused, errors.FaxbridgeError)
    assert "Refused" in _drawn()


def test_the_webhook_body_errors_are_faxbridge_errors() -> None:
    from faxbridge import app, webform

    assert issubclass(webform.BadRequest, errors.FaxbridgeError)
    assert issubclass(webform.TooLarge, errors.FaxbridgeError)
    assert app.AlreadyRunning is errors.AlreadyRunning
