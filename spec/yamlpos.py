"""YAML to plain data, remembering where every key and value came from.

PyYAML's constructors forget positions and silently let a duplicate key win;
a spec loader needs both, so this walks the composed node tree itself.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import Position, SpecError

Path = tuple[Any, ...]


class Located:
    """Plain data plus a map from a path (tuple of keys and indexes) to the
    position of the value there, and of each mapping key (path + ("<key>",))."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.positions: dict[Path, Position] = {}

    def at(self, path: Path, key: bool = False) -> Position:
        """The nearest known position of `path`, walking up to its parents."""
        probe = tuple(path) + (("<key>",) if key else ())
        while probe:
            if probe in self.positions:
                return self.positions[probe]
            probe = probe[:-1]
        return self.positions.get((), Position(self.filename, 1, 1))

    def _pos(self, mark: yaml.Mark) -> Position:
        return Position(self.filename, mark.line + 1, mark.column + 1)


def load(text: str, filename: str) -> tuple[Any, Located]:
    where = Located(filename)
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = where._pos(mark) if mark else Position(filename, 1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError(pos, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:  # pragma: no cover - unmarked errors are rare
        raise SpecError(Position(filename, 1, 1), f"YAML error: {exc}") from None
    if node is None:
        raise SpecError(Position(filename, 1, 1), "empty spec")
    constructor = yaml.SafeLoader("")
    return _walk(node, (), where, constructor), where


def _walk(node: yaml.Node, path: Path, where: Located, ctor: yaml.SafeLoader) -> Any:
    where.positions[path] = where._pos(node.start_mark)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError(where._pos(key_node.start_mark), "mapping keys must be plain scalars")
            key = key_node.value
            if key in out:
                raise SpecError(where._pos(key_node.start_mark), f"duplicate key {key!r}")
            where.positions[path + (key, "<key>")] = where._pos(key_node.start_mark)
            out[key] = _walk(value_node, path + (key,), where, ctor)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, path + (i,), where, ctor) for i, item in enumerate(node.value)]
    if node.tag == "tag:yaml.org,2002:timestamp":
        return node.value  # dates stay strings; the schema checks their form
    try:
        return ctor.construct_object(node)
    except yaml.constructor.ConstructorError as exc:
        raise SpecError(where._pos(node.start_mark), f"bad value: {exc.problem}") from None
