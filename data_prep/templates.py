"""`userlm.flipped.templates` under its import path from before the contract left data_prep (documented then)."""

from userlm.flipped.templates import *  # noqa: F403
