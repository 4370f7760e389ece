"""`EvalConfig`: every option of `userlm eval`, once. It is at the same time the YAML file,
the command-line flags and the Python API (userlm/config.py does the parsing and checking):

    userlm eval eval.yaml                                          # checkpoints, data, ... in the file
    userlm eval --checkpoints sim=out/simulator base=default@chatml --data out/prep/test.jsonl
    evaluate(EvalConfig(checkpoints=["sim=out/simulator"], data=Path("out/prep/test.jsonl")))

A checkpoint is `NAME=PATH` (a `userlm train` output, which carries its flipped template) or
`NAME=PATH@TEMPLATE` for an ordinary instruct model prompted through a flipped template
(the "prompted base" baseline, e.g. `base=default@chatml`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from userlm.config import Config
from userlm.errors import UserError
from userlm.flipped.templates import TEMPLATES
from userlm.infer.turn_sampling import DEFAULT_SAMPLING

from .differences import parse_pair


@dataclass(frozen=True)
class CheckpointSpec:
    name: str
    path: Path
    # None: the checkpoint's own saved flipped template; a name: a prompted instruct model.
    template: str | None = None


def parse_checkpoint(text: str) -> CheckpointSpec:
    """`NAME=PATH` or `NAME=PATH@TEMPLATE`; an `@` that names no template belongs to the path."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise UserError(f"Give each checkpoint as NAME=PATH or NAME=PATH@TEMPLATE, not {text!r}.")
    path, at, template = rest.rpartition("@")
    if not at or template not in TEMPLATES:
        path, template = rest, None
    return CheckpointSpec(name, Path(path).expanduser(), template)


# What marks a folder as an earlier `userlm eval` output, which a new run may replace.
OUTPUT_MARKER = "metrics.json"


def check_out(out: Path, inputs: list[Path]) -> None:
    """`out` is replaced as a whole: it must not hold an input, nor anything that is not an eval output."""
    final = out.resolve()
    for path in inputs:
        held = path.resolve()
        if held == final or final in held.parents:
            raise UserError(
                f"The output folder {out} holds the input {path}, which would be deleted; give another --out."
            )
    if final.is_file():
        raise UserError(f"The output {out} is a file; give a folder for the report (it is replaced as a whole).")
    if final.is_dir() and any(final.iterdir()) and not (final / OUTPUT_MARKER).is_file():
        raise UserError(
            f"The output folder {out} holds files that `userlm eval` did not write; give a new or empty folder "
            "(the report folder is replaced as a whole)."
        )


@dataclass(kw_only=True)
class EvalConfig(Config):
    checkpoints: list[str] = field(
        metadata={
            "nonempty": True,
            "help": "checkpoints to compare, each NAME=PATH (a `userlm train` output) or NAME=PATH@TEMPLATE "
            "(an instruct model prompted through the flipped template "
            f"{' or '.join(TEMPLATES)}), e.g. base=default@chatml",
        }
    )
    compare: list[str] | None = field(
        default=None,
        metadata={
            "help": "differences between checkpoints besides each one minus the prompted base, each "
            "'NAME minus OTHER' (e.g. 'persona-simulator minus simulator'), with a paired interval; "
            "unset: each checkpoint minus every one listed before it, the base aside; [] for none"
        },
    )
    data: Path = field(
        metadata={
            "help": "held-out flipped samples: a `userlm prep` output folder (its test split) "
            "or the test.jsonl(.gz) it wrote"
        }
    )
    out: Path = field(
        default=Path("out/eval"),
        metadata={
            "help": "folder for metrics.json, report.md and report.html, replaced as a "
            "whole (a new, empty or earlier eval folder)"
        },
    )
    seed: int = field(default=0, metadata={"min": 0, "help": "seed of the subsets drawn and of every generation"})
    perplexity_samples: int = field(
        default=200,
        metadata={"min": 0, "help": "real user turns (END samples included) scored for perplexity; 0 skips perplexity"},
    )
    # Characters, not tokens, so every checkpoint (whatever its tokenizer) sees one set.
    max_sample_chars: int = field(
        default=6000,
        metadata={
            "min": 1,
            "help": "samples longer than this (prompt and target, in characters) are left out of perplexity "
            "and probes, decision points whose prompt is longer out of termination and "
            "P(end) (each conversation cut there), and counted",
        },
    )
    first_turn_intents: int = field(
        default=100,
        metadata={
            "min": 2,
            "help": "distinct intents whose first turn is generated (first-turn "
            "diversity, intent decomposition, naturalness)",
        },
    )
    termination_conversations: int = field(
        default=50,
        metadata={
            "min": 0,
            "help": "held-out conversations whose decision points (up to the first one over max_sample_chars) are "
            "scored for termination; 0 skips termination",
        },
    )
    probes_per_kind: int = field(
        default=50, metadata={"min": 0, "help": "role and intent adherence probes of each kind; 0 skips the probes"}
    )
    diversity_intents: int = field(
        default=10,
        metadata={"min": 0, "help": "intents simulated several times for the diversity within one intent; 0 skips it"},
    )
    simulations_per_intent: int = field(
        default=5, metadata={"min": 2, "help": "first turns simulated per diversity intent"}
    )
    max_new_tokens: int = field(
        default=DEFAULT_SAMPLING.max_new_tokens, metadata={"min": 1, "help": "most tokens of a generated turn"}
    )
    termination_max_new_tokens: int = field(
        default=16, metadata={"min": 1, "help": "most tokens of a turn generated at a termination decision point"}
    )
    end_probability_conversations: int | None = field(
        default=None,
        metadata={
            "min": 0,
            "help": "held-out conversations whose decision points (up to the first one over "
            "max_sample_chars) are scored for P(end as the first token) "
            "and its ROC AUC (one forward pass per point at most, no generation); "
            "unset: all that fit max_sample_chars; 0 skips it",
        },
    )
    leave_probe: bool = field(
        default=True,
        metadata={
            "help": "P(end) right after a full, correct answer and right after a refusal or off-topic answer on the "
            "leave probes (two P(end) points a probe), and good minus bad: does the simulator leave because it "
            "was served well; false skips it"
        },
    )
    leave_probes: Path | None = field(
        default=None,
        metadata={
            "help": "a JSONL of leave probes (id, intent, first_turn, good_answer, bad_answer, bad_kind per line); "
            "unset: the 26 shipped with the package"
        },
    )
    scope_conversations: int = field(
        default=50,
        metadata={
            "min": 0,
            "help": "held-out conversations (two decision points or more "
            "within max_sample_chars) whose first two points "
            "are read with each of three stated lengths in the intent, for how often the simulator leaves when told "
            "(termination obeys scope; P(end) passes only, three a conversation); 0 skips it",
        },
    )
    persona_users: int = field(
        default=50,
        metadata={
            "min": 0,
            "help": "held-out users (two turns or more) whose turns are generated with "
            "their persona for persona fidelity; 0 skips it",
        },
    )
    persona_turns_per_user: int = field(
        default=3, metadata={"min": 1, "help": "most turns generated per held-out user for persona fidelity"}
    )
    persona_filter: str | None = field(
        default=None,
        metadata={
            "help": "only held-out users whose measured style passes this `userlm prep --persona-filter` expression "
            "(e.g. length=very_short|short), to measure a persona subset"
        },
    )
    contrast_intents: int = field(
        default=16,
        metadata={
            "min": 0,
            "help": "intents whose first turn is generated under two opposite "
            "personas (the persona contrast probe); 0 skips it",
        },
    )
    contrast_max_new_tokens: int = field(
        default=128,
        metadata={
            "min": 1,
            "help": "most tokens of a contrast probe turn: room for the elaborate persona's full turn (about 80 words)",
        },
    )
    naturalness_fit_samples: int = field(
        default=2000,
        metadata={
            "min": 10,
            "help": "train-split samples the offline naturalness detector is "
            "trained on (and held-out turns it is validated on)",
        },
    )
    naturalness_model_turns: int = field(
        default=16,
        metadata={
            "min": 0,
            "help": "held-out intents whose first turn the embedded SmolLM2, prompted "
            "as a user, writes in each of two settings, "
            "against which the naturalness detector is validated (its AUC against real first turns); "
            "0 skips that check",
        },
    )
    judge_validation_conversations: int = field(
        default=200,
        metadata={
            "min": 0,
            "help": "held-out conversations from which four answers with known "
            "labels are built to score the adherence judge "
            "out of sample (each one request to an endpoint judge)",
        },
    )
    batch_size: int = field(
        default=8, metadata={"min": 1, "help": "prompts generated (and half as many samples scored) at once"}
    )
    bf16: bool | Literal["auto"] = field(
        default=False,
        metadata={
            "help": "read the teacher-forced passes (perplexity, P(end)) under bf16 "
            "autocast: about twice as fast on a CPU with "
            "bf16 instructions (about 20x slower on one without), perplexity "
            "within about 2% of float32's; auto: where the "
            "hardware has bf16; generation is unchanged"
        },
    )
    judge_endpoint: str | None = field(
        default=None,
        metadata={
            "help": "base URL (…/v1) of an OpenAI-compatible chat endpoint that judges the adherence probes; "
            "without it an offline heuristic judge is used, and labelled as such"
        },
    )
    judge_model: str | None = field(default=None, metadata={"help": "model name at the judge endpoint"})
    judge_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "environment variable holding the judge endpoint's API key"}
    )
    naturalness_detector: str | None = field(
        default=None,
        metadata={
            "help": "MODULE:FUNCTION, a callable texts -> probabilities that a human wrote them; "
            "without it an offline detector trained on the train split beside "
            "the test data is used, and labelled as such; "
            "either is validated on held-out turns"
        },
    )
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def validate(self) -> None:
        from userlm.infer.loading import DEFAULT_NAME  # imported here: it pulls in torch

        if self.judge_endpoint and not self.judge_model:
            raise UserError("Name the judge's model with judge_model when you give judge_endpoint.")
        if Path(self.data).is_dir():
            from userlm.flipped.samples import split_file

            self.data = split_file(self.data, "test")  # a prep folder: its test split, whatever its compression
        if not Path(self.data).is_file():
            raise UserError(
                f"The test data {self.data} does not exist; give the folder "
                "(or its test.jsonl) that `userlm prep` wrote."
            )
        if self.persona_filter:
            from userlm.flipped.style import parse_filter

            parse_filter(self.persona_filter)
        specs = self.specs
        names = [spec.name for spec in specs]
        repeated = next((name for name in names if names.count(name) > 1), None)
        if repeated is not None:
            raise UserError(f"Two checkpoints are named {repeated!r}; give every checkpoint a different NAME.")
        for text in self.compare or []:
            parse_pair(text, names)
        for spec in specs:
            if str(spec.path) != DEFAULT_NAME and not spec.path.exists():
                raise UserError(
                    f"Checkpoint {spec.name}: nothing at {spec.path}; give a `userlm train` output, a model folder, "
                    f"a .gguf file or {DEFAULT_NAME}, with @TEMPLATE ({', '.join(TEMPLATES)}) for a prompted model."
                )
        check_out(Path(self.out), [Path(self.data), *(spec.path for spec in specs if str(spec.path) != DEFAULT_NAME)])

    @property
    def specs(self) -> list[CheckpointSpec]:
        return [parse_checkpoint(text) for text in self.checkpoints]
