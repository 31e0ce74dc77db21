"""YAML that cannot silently widen a config: a key given twice in one mapping is an error.

PyYAML's loaders keep the last of two equal keys, so a second `policy:` block replaces the
first (and a second `models:` in a rule replaces the first list) without a word. The
`StrictLoader` below walks the composed document before constructing it and refuses every
duplicate key, at every level, with its key path and both line numbers. Keys compare as
the values they construct to (`1` and `0x1` are one key; `1` and `"1"` are two), as the
mapping itself would see them. YAML merge keys (`<<`) are left to PyYAML's own rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_MERGE = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class DuplicateKey:
    path: tuple[int | str, ...]  # the key's path, ending with the key itself
    line: int                    # 1-based line of the second occurrence
    first_line: int              # 1-based line of the first


class DuplicateKeys(yaml.YAMLError):
    """The document repeats keys; `duplicates` lists every one, in document order."""

    def __init__(self, duplicates: list[DuplicateKey]) -> None:
        super().__init__(f"{len(duplicates)} duplicate key(s)")
        self.duplicates = duplicates


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (`DuplicateKeys`)."""

    def construct_document(self, node: Node) -> Any:
        found: list[DuplicateKey] = []
        self._find_duplicates(node, (), found, set())
        if found:
            raise DuplicateKeys(found)
        return super().construct_document(node)

    def _find_duplicates(self, node: Node, path: tuple[int | str, ...],
                         found: list[DuplicateKey], seen: set[int]) -> None:
        if id(node) in seen:  # an alias: already walked (and anchors may recurse)
            return
        seen.add(id(node))
        if isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                self._find_duplicates(item, (*path, i), found, seen)
        elif isinstance(node, MappingNode):
            first: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key = self._key(key_node)
                if key is not None:
                    line = key_node.start_mark.line + 1
                    if key in first:
                        found.append(DuplicateKey((*path, _shown(key)), line, first[key]))
                    else:
                        first[key] = line
                self._find_duplicates(value_node, (*path, _shown(key)), found, seen)

    def _key(self, node: Node) -> Any:
        """The key as the mapping will hold it; None for merge keys and keys that are
        not scalars (the constructor refuses unhashable ones itself)."""
        if not isinstance(node, ScalarNode) or node.tag == _MERGE:
            return None
        value = self.construct_object(node)
        return (type(value).__name__, value)


def _shown(key: Any) -> int | str:
    return "?" if key is None else str(key[1])
