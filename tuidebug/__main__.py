"""`python -m tuidebug`."""

import sys

from tuidebug.cli import main

sys.exit(main())
