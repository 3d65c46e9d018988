"""ctest driver for the Python tests: exits 77 (skipped) when numpy or pytest is missing,
else runs pytest on this directory. PYTHONPATH and STARLING_LIB come from ctest."""
import os
import sys

try:
    import numpy  # noqa: F401
    import pytest
except ImportError as e:
    print(f"skipping the Python tests: {e}")
    sys.exit(77)

here = os.path.dirname(os.path.abspath(__file__))
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", here] + sys.argv[1:]))
