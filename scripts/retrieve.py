#!/usr/bin/env python
"""`multimodal retrieve`, runnable from a checkout: python scripts/retrieve.py --help."""

import sys

from multimodal.cli.retrieve import main

if __name__ == "__main__":
    sys.exit(main())
