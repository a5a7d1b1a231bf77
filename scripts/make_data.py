#!/usr/bin/env python
"""`multimodal make-data`, runnable from a checkout: python scripts/make_data.py --help."""

import sys

from multimodal.cli.make_data import main

if __name__ == "__main__":
    sys.exit(main())
