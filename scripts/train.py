#!/usr/bin/env python
"""`multimodal train`, runnable from a checkout: python scripts/train.py --help."""

import sys

from multimodal.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
