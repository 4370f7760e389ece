"""Synthetic training conversations for an assistant (`userlm synth`).

`config.py` (the command's keys), `filters.py` (which simulated conversations are kept,
and why the others are not), `export.py` (the training set and its datasheet), `run.py`
(the command: simulate, filter, export).
"""
