#!/usr/bin/env python
"""`multimodal attention`, runnable from a checkout: python scripts/attention.py --help."""

import sys

from multimodal.cli.attention import main

if __name__ == "__main__":
    sys.exit(main())
