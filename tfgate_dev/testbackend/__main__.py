"""``python -m tfgate_dev.testbackend``: run the TensorFlow Serving stand-in (see the package docstring)."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from .server import main

sys.exit(main())
