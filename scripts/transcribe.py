#!/usr/bin/env python
"""`multimodal transcribe`, runnable from a checkout: python scripts/transcribe.py --help."""

import sys

from multimodal.cli.transcribe import main

if __name__ == "__main__":
    sys.exit(main())
