"""YAML loading that remembers the line of every mapping key and sequence item.

Mappings load as :class:`PosDict` and sequences as :class:`PosList`; both carry ``line`` (their own start)
and ``lines`` (key or index -> line), so an error found later can point at ``file:line``.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, SequenceNode


class PosDict(dict[str, Any]):
    """A mapping that knows the line of each key."""

    line: int = 0
    lines: dict[str, int]


class PosList(list[Any]):
    """A sequence that knows the line of each item."""

    line: int = 0
    lines: list[int]


# libyaml's parser (six times faster than PyYAML's own on the shipped specs) gives the same nodes with the
# same marks; PyYAML's pure-Python one where libyaml is missing.
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc]
    """A safe loader whose mappings and sequences remember their lines."""


def _construct_mapping(loader: _Loader, node: MappingNode) -> PosDict:
    loader.flatten_mapping(node)
    result = PosDict()
    result.line = node.start_mark.line + 1
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(
            key_node, deep=True)
        if not isinstance(key, str):
            key = str(key)
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        result[key] = loader.construct_object(
            value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: _Loader, node: SequenceNode) -> PosList:
    result = PosList(loader.construct_object(
            child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load(text: str) -> Any:
    """Parse YAML text into plain data whose containers remember their lines (raises yaml.YAMLError)."""
    return yaml.load(text, Loader=_Loader)


def line_of(root: Any, path: list[str | int]) -> int:
    """The line of the deepest node along ``path`` (a jsonschema error path) that has a known line."""
    line = getattr(root, "line", 0)
    node = root
    for part in path:
        if isinstance(node, PosDict) and isinstance(part, str) and part in node:
            line = node.lines.get(part, line)
            node = node[part]
        elif isinstance(node, PosList) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lines[part]
            node = node[part]
        else:
            break
    return line
