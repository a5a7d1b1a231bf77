#!/usr/bin/env python
"""`multimodal export`, runnable from a checkout: python scripts/export.py --help."""

import sys

from multimodal.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
