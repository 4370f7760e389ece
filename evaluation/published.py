"""The paper's published figures (arXiv 2510.06552, as recorded in docs/design.md#published-figures), in percent.

Reports show them in rows labelled "published", never mixed with measured values; they
were measured on the paper's own data and sample sizes (first-turn diversity: 2,000
intents), not on this test set. Only the figures the design gives are here.
"""

from __future__ import annotations

SOURCE = "Flipping the Dialogue (arXiv 2510.06552), as recorded in docs/design.md#published-figures"

PUBLISHED = {
    "first_turn_diversity": {"human": 94.01, "UserLM-8b": 94.55, "GPT-4o": 74.42},
    "intent_decomposition": {"human": 1.68, "UserLM-8b": 2.69, "GPT-4o": 7.68},
    "termination_f1": {"UserLM-8b": 63.54, "GPT-4o": 1.38},
    "role_adherence": {"UserLM-8b": 93.95},
    "intent_adherence": {"UserLM-8b": 94.65},
}
