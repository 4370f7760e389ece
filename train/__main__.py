"""`python -m userlm.train RECIPE [key=value ...]`, for the multi-process launchers.

`deepspeed --module` passes `--local_rank=N` first; it is TrainingArguments' own (hidden)
`local_rank` key, while the rank itself comes from the environment.
"""

import sys

from userlm.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
