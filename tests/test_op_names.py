"""proxy/inspect/tf_op_names.py is the installed TensorFlow's op registry, as generated."""

from __future__ import annotations

import pytest

from proxy.inspect import tf_op_names
from proxy.inspect.dangerous_ops import ALL_LISTED


def test_the_names_include_every_listed_dangerous_op() -> None:
    """Every op of the denylist's categories is a registered op name."""
    assert ALL_LISTED <= tf_op_names.NAMES
    assert {"ReadFile", "_Send", "_EagerConst", "MatMul"} <= tf_op_names.NAMES


@pytest.mark.tf
def test_the_shipped_file_is_the_installed_registry() -> None:
    """Regenerating from the installed TensorFlow gives the committed file (else run
    `python -m tfgate_dev.opnames > proxy/inspect/tf_op_names.py`)."""
    tf = pytest.importorskip("tensorflow")
    from tfgate_dev import opnames

    shipped = __import__("inspect").getsource(tf_op_names)
    assert opnames.render(opnames.registered_ops(), tf.__version__) == shipped
