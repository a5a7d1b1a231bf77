#!/usr/bin/env python
"""`multimodal models`, runnable from a checkout: python scripts/models.py --help."""

import sys

from multimodal.cli.models import main

if __name__ == "__main__":
    sys.exit(main())
