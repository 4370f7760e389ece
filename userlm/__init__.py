"""userlm-kit: build user simulators from real chat logs."""

from userlm.quiet import silence_unactionable_warnings

__version__ = "0.1.0"

silence_unactionable_warnings()
