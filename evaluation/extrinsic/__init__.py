"""Extrinsic evaluation (`userlm extrinsic`): the paper's reality check of an assistant under user simulators.

`tasks.py` (tasks with a checker, HumanEval built in via `humaneval.py`), `sandbox.py`
(the child process a solution runs in), `figures.py` (the figures and their definitions),
`config.py` and `run.py` (the command).
"""
