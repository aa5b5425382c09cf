"""`python -m sora_async`: the same as the `sora-async` command."""

import sys

from .cli import main

sys.exit(main())
