"""``python -m multimodal COMMAND``: the ``multimodal`` command without the installed entry point."""

import sys

from multimodal.cli import main

sys.exit(main())
