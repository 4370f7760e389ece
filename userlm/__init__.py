"""userlm-kit: build user simulators from real chat logs."""

__version__ = "0.1.0"
