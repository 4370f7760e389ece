"""`userlm.flipped.samples` under its import path from before the contract left data_prep (documented then)."""

from userlm.flipped.samples import *  # noqa: F403
