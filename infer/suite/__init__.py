"""`userlm test`: a suite of simulated users against an assistant, with a pass/fail gate (run.py)."""
