"""`userlm test`: a suite of simulated users against an assistant under test, with a pass/fail gate (run.py)."""


def __getattr__(name: str):
    # `from userlm.infer.suite import run_suite, suite_summary`, the documented path from before suite/
    # was a package; loaded on use so that importing suite.config stays light.
    if name in ("run_suite", "suite_summary"):
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
