"""How a simulated user turn is drawn: the sampling settings and the end steering, written once.

    TurnSampling()                                  # 64 new tokens, temperature 1.0, top-p 0.8, the sampled draw
    TurnSampling(end_bias=1.5)                      # leaves more readily
    TurnSampling(end_threshold=0.3)                 # leaves iff P(end) >= 0.3 at the turn's first token

Every backend (`infer/simulator.py`, `infer/completions.py`), every command that drives one
(simulate, test, chat, serve) and evaluation read the defaults from here; the config
dataclasses' keys take their defaults from `DEFAULT_SAMPLING`.

P(end) is the probability that the turn's first token is the end marker: the model's own, at
temperature 1, before any guardrail's mask and before the bias (the figure a tester compares
across simulators and servers). End steering acts on it:
- the sampled draw (default): the end marker is drawn like any token;
- `end_bias` b: b is added to the end marker's logit before every draw of the turn, as an
  OpenAI `logit_bias` is; at the first token, at temperature 1, the steered probability is
  P'(end) = sigmoid(logit(P(end)) + b). A positive bias raises the leave rate, a negative one
  lowers it;
- `end_threshold` t: the user leaves (the end marker is the first token) iff P'(end) >= t, and
  otherwise the end marker is banned for that turn; 0 leaves at every turn the guardrails
  allow, 1 never leaves. With no bias P'(end) is P(end).
`min_turns_before_end` (guardrails) and `max_turns` still bound when a user may and must leave.

`userlm calibrate` writes `end_bias` and/or `end_threshold` to a YAML file (`end_calibration`);
`read_end_calibration` reads them, and they apply where a config does not set the key itself.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from userlm.errors import UserError
from userlm.flipped.format import END_MARKER

STEERING_KEYS = ("end_bias", "end_threshold")


@dataclass(frozen=True)
class TurnSampling:
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 0.8
    # Log-odds added to the end marker's logit before every draw of a turn; 0 leaves the draw as it is.
    end_bias: float = 0.0
    # Leave iff the steered P(end) reaches it at the turn's first token (else the end marker is banned); None: drawn.
    end_threshold: float | None = None

    def with_fields(self, **fields) -> TurnSampling:
        """These settings with some fields replaced (the keyword arguments `generate` takes)."""
        return dataclasses.replace(self, **fields) if fields else self

    @property
    def steers(self) -> bool:
        return self.end_bias != 0 or self.end_threshold is not None

    def settings(self) -> dict:
        """What records and conversation ids name: the steering keys only where steering is on, so the
        ids of runs made before end steering existed stay the same."""
        settings = dataclasses.asdict(self)
        if not self.steers:
            for key in STEERING_KEYS:
                settings.pop(key)
        return settings

    def steered(self, p_end: float) -> float:
        """P'(end) = sigmoid(logit(P(end)) + end_bias), the first token's end probability after the bias."""
        if self.end_bias == 0 or p_end in (0.0, 1.0):
            return p_end
        logit = math.log(p_end) - math.log1p(-p_end) + self.end_bias
        return 1 / (1 + math.exp(-logit)) if logit > -700 else 0.0

    def leaves(self, p_end: float) -> bool | None:
        """The threshold's decision for a turn whose first token has this P(end); None without a threshold."""
        if self.end_threshold is None:
            return None
        return self.steered(p_end) >= self.end_threshold


DEFAULT_SAMPLING = TurnSampling()


def unsteerable_error(sampling: TurnSampling, end_token_id: int | None) -> UserError | None:
    """The one sentence for end steering asked of a simulator whose vocabulary has no end marker."""
    if sampling.steers and end_token_id is None:
        return UserError(
            f"The simulator's tokenizer has no end marker {END_MARKER}, so end_bias and end_threshold cannot "
            "steer it; drop them, or use a simulator trained with `userlm train`."
        )
    return None


def read_end_calibration(path: Path) -> dict:
    """The end steering a `userlm calibrate` file holds: its top-level `end_bias` (a number) and
    `end_threshold` (a number from 0 to 1, or null), those it has; its other keys are report data."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"No end calibration file at {path}; run `userlm calibrate` or fix end_calibration.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise UserError(
            f"{path} is not a YAML file ({error.__class__.__name__}); point end_calibration at the "
            "file `userlm calibrate` wrote."
        ) from None
    if not isinstance(data, dict) or not any(key in data for key in STEERING_KEYS):
        raise UserError(
            f"{path} holds neither end_bias nor end_threshold; point end_calibration at the file "
            "`userlm calibrate` wrote."
        )
    found = {key: data[key] for key in STEERING_KEYS if key in data}
    bias = found.get("end_bias")
    if "end_bias" in found and not (is_number(bias) and math.isfinite(bias)):
        raise UserError(f"end_bias in {path} is {bias!r}; it must be a number (log-odds).")
    threshold = found.get("end_threshold")
    if threshold is not None and not (is_number(threshold) and 0 <= threshold <= 1):
        raise UserError(f"end_threshold in {path} is {threshold!r}; it must be a number from 0 to 1, or null.")
    if "end_bias" in found:
        found["end_bias"] = float(bias)
    return found


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
