"""``python -m jobtrail.cli``: the same as the ``jobtrail`` console script."""

import sys

from jobtrail.cli import main

if __name__ == "__main__":  # not when a tool imports every module (tests/test_dependencies.py)
    sys.exit(main())
