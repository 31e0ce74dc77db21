"""Tests for proxy/inspect/dangerous_ops.py: the default denylist and its categories."""

from __future__ import annotations

import pytest

from proxy.inspect import dangerous_ops
from proxy.inspect.dangerous_ops import (
    ALL_LISTED,
    CATEGORIES,
    DEFAULT_DENYLIST,
    categories_of,
)


class TestCategories:
    def test_each_category_explains_itself(self) -> None:
        """Every category has a unique name, a one-line reason and at least one op."""
        names = [c.name for c in CATEGORIES]
        assert len(names) == len(set(names))
        for category in CATEGORIES:
            assert category.ops and category.reason and "\n" not in category.reason

    def test_the_known_dangers_are_denied(self) -> None:
        """The ops that read files, run Python, mmap files, dial out, dump or carry code in an
        attr (an MLIR module) are refused."""
        for op in ("ReadFile", "WriteFile", "MatchingFiles", "SaveV2", "PyFunc", "EagerPyFunc",
                   "PyFuncStateless", "ImmutableConst", "RpcCall", "RpcServer",
                   "DataServiceDatasetV4", "DebugIdentity", "DebugIdentityV3", "PrintV2",
                   "Abort", "XlaCallModule", "MlirPassthroughOp", "TPUCompile",
                   "DatasetFromGraph", "CollectiveReduceV2",
                   "GetSessionHandle", "CreateSummaryFileWriter"):
            assert op in DEFAULT_DENYLIST, op

    def test_advisory_categories_are_not_denied(self) -> None:
        """Ops every ordinary program runs stay out of the default denylist."""
        for op in ("VarHandleOp", "Fill", "Tile", "While", "_Recv", "Range"):
            assert op in ALL_LISTED and op not in DEFAULT_DENYLIST, op

    def test_categories_of(self) -> None:
        assert [c.name for c in categories_of("ReadFile")] == ["file-io"]
        assert categories_of("MatMul") == ()

    def test_names_look_like_ops(self) -> None:
        """Op names are identifiers: a typo with a space or a star would never match."""
        for op in ALL_LISTED:
            assert op.replace("_", "").isalnum(), op


@pytest.mark.tf
def test_every_name_is_a_registered_op() -> None:
    """Each listed op exists in the installed TensorFlow's op registry (internal ops like
    _Send and C++-only ones like XlaLaunch included), so no entry is a dead letter."""
    pytest.importorskip("tensorflow")
    from tensorflow.python.framework import op_def_registry
    missing = sorted(op for op in dangerous_ops.ALL_LISTED if op_def_registry.get(op) is None)
    assert missing == []
