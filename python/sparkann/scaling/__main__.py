"""``python -m sparkann.scaling``: see :mod:`sparkann.scaling.cli`."""
import sys

from sparkann.scaling.cli import main

sys.exit(main())
