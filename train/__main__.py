"""`python -m userlm.train RECIPE [key=value ...]`, for the multi-process launchers."""

import sys

from userlm.train.cli import main

sys.exit(main())
