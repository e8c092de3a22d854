"""One drive's shape, as much of it as inheritance needs: item id → (parent id, has its own
permissions, is a folder). No names, no records: about 200 bytes an item (measured)."""

from __future__ import annotations

import sys
from typing import Callable, NamedTuple

MAX_DEPTH = 10_000  # a parent chain longer than this is a loop in the data, not a tree


class Node(NamedTuple):
    parent: str | None
    own: bool
    folder: bool


class Tree:
    """The items of one drive. ``source(x)`` is x's nearest ancestor with its own permissions (the
    root has them always): every item without its own has exactly that ancestor's grants. A
    parent that is not (or no longer) in the drive counts as the root, in both modes alike."""

    def __init__(self, root: str | None):
        self.root = root
        self.nodes: dict[str, Node] = {}
        if root:
            self.nodes[root] = Node(None, True, True)
        self._memo: dict[str, str] = {}

    def add(self, item_id: str, parent: str | None, own: bool, folder: bool) -> None:
        # a folder's id is the parent of each of its items: one string for all of them
        self.nodes[item_id] = Node(sys.intern(parent) if parent else None, own, folder)
        self._memo.clear()

    def remove(self, item_id: str) -> None:
        self.nodes.pop(item_id, None)
        self._memo.clear()

    def source(self, item_id: str) -> str | None:
        """The nearest own-permission ancestor of ``item_id`` (exclusive); the root has none."""
        return self._source(item_id, self.nodes.get, self._memo)

    def _source(self, item_id: str, node_of: Callable[[str], Node | None], memo: dict[str, str]) -> str | None:
        if item_id == self.root:
            return None
        node = node_of(item_id)
        fid = node.parent if node else None
        path: list[str] = []
        found = self.root
        for _ in range(MAX_DEPTH):
            if fid is None or fid == self.root:
                break
            if fid in memo:
                found = memo[fid]
                break
            parent = node_of(fid)
            if parent is None:
                break
            if parent.own:
                found = fid
                break
            path.append(fid)
            fid = parent.parent
        for f in path:  # folders without their own permissions between: they share the answer
            memo[f] = found  # type: ignore[assignment]
        return found

    def depth(self, item_id: str) -> int:
        n, fid = 0, item_id
        while fid is not None and fid != self.root and n < MAX_DEPTH:
            node = self.nodes.get(fid)
            if node is None:
                break
            fid, n = node.parent, n + 1
        return n


class History:
    """A tree and what it was before this run's changes: the old answer to ``source`` tells whether
    an unchanged item's inherited grants still hold."""

    def __init__(self, tree: Tree):
        self.tree = tree
        self.before: dict[str, Node | None] = {}  # changed item -> its node before (None: it is new)
        self._memo: dict[str, str] = {}

    def change(self, item_id: str, node: Node | None) -> None:
        if item_id not in self.before:
            self.before[item_id] = self.tree.nodes.get(item_id)
        if node is None:
            self.tree.remove(item_id)
        else:
            self.tree.add(item_id, *node)
        self._memo.clear()

    def old_node(self, item_id: str) -> Node | None:
        return self.before[item_id] if item_id in self.before else self.tree.nodes.get(item_id)

    def old_source(self, item_id: str) -> str | None:
        return self.tree._source(item_id, self.old_node, self._memo)


__all__ = ["History", "Node", "Tree"]
