"""`python -m proxy ...` is the `strangler` command."""

import sys

from proxy.cli import main

sys.exit(main())
