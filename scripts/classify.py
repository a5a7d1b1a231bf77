#!/usr/bin/env python
"""`multimodal classify`, runnable from a checkout: python scripts/classify.py --help."""

import sys

from multimodal.cli.classify import main

if __name__ == "__main__":
    sys.exit(main())
