#!/usr/bin/env python
"""`multimodal zero-shot`, runnable from a checkout: python scripts/zero_shot.py --help."""

import sys

from multimodal.cli.zero_shot import main

if __name__ == "__main__":
    sys.exit(main())
