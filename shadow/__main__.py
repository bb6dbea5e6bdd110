from __future__ import annotations

import sys

from shadow.cli import main

sys.exit(main())
