"""The extrinsic figures of one simulator's conversations (the paper's Table 3), each with its 95% interval.

Definitions (words are `flipped.words.words`: lowercase, runs of letters and digits):
- success rate: share of the checked conversations whose final answer the task's checker
  passed, in percent;
- user turns: user turns per conversation, the turn that only leaves not counted;
- turn variance: the sample variance (n − 1) of the user turns of the simulations of one
  intent, averaged over the intents simulated at least twice: how differently the
  simulator paces the same task;
- intent coverage: share of the task text's distinct content words (not stopwords) that
  occur in the user's turns of the conversation, in percent: how much of the task the user
  revealed before the conversation ended;
- unigram difference: 1 − the mean pairwise Jaccard index of the unigram sets of the
  user's side (all user turns together) of the simulations of one intent, averaged over
  the intents simulated at least twice (metrics.pairwise_diversity): 0 when every
  simulation of an intent says the same words, 1 when no two share one.

Conversations broken by a component (simulator_error, assistant_error) are left out of
every figure and counted; a rerun simulates them again. Intervals resample tasks
(`evaluation/intervals.py`), the unit the simulations of one intent cluster in.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict

from userlm.evaluation.intervals import mean_figure
from userlm.evaluation.metrics import pairwise_diversity
from userlm.flipped.format import END_MARKER
from userlm.flipped.words import content_words

BROKEN = ("simulator_error", "assistant_error")


def user_turns(turns: list[dict]) -> list[str]:
    """The user's turns, the one that only leaves (the end marker) left out."""
    return [t["content"] for t in turns if t["role"] == "user" and t["content"].strip() != END_MARKER]


def intent_coverage(turns: list[dict], task_text: str) -> float:
    """Share of the task text's distinct content words that occur in the user's turns."""
    wanted = content_words(task_text)
    if not wanted:
        raise ValueError("Intent coverage needs a task text with content words.")
    said = set().union(*map(content_words, user_turns(turns))) if user_turns(turns) else set()
    return len(wanted & said) / len(wanted)


def turn_variance(counts: list[int]) -> float:
    """The sample variance of the user turns of one intent's simulations (at least two)."""
    return statistics.variance(counts)


def unigram_difference(user_sides: list[str]) -> float:
    """1 − mean pairwise Jaccard of the unigram sets of one intent's simulations (at least two)."""
    return pairwise_diversity(user_sides)


def simulator_figures(records: list[dict], checks: dict[str, dict], tasks: dict[str, dict], *, seed: int) -> dict:
    """The figures of one simulator's conversations; `checks` by conversation id, `tasks` by intent."""
    counted = [r for r in records if r["termination_reason"] not in BROKEN]
    task_of = {r["conversation_id"]: tasks[r["intent"]]["task_id"] for r in records}
    checked = [r for r in counted if checks[r["conversation_id"]]["passed"] is not None]
    by_task: dict[str, list[dict]] = defaultdict(list)
    for record in counted:
        by_task[task_of[record["conversation_id"]]].append(record)
    repeated = {task: group for task, group in by_task.items() if len(group) >= 2}

    def per_task(values: dict[str, float]) -> dict:
        return mean_figure(list(values.values()), seed=seed, ids=list(values), unit="task")

    return {
        "conversations": len(records),
        "broken": len(records) - len(counted),
        "unchecked": len(counted) - len(checked),
        "termination_reasons": dict(Counter(r["termination_reason"] for r in records)),
        "success_rate": mean_figure(
            [float(checks[r["conversation_id"]]["passed"]) for r in checked],
            seed=seed,
            ids=[task_of[r["conversation_id"]] for r in checked],
            unit="task",
            scale=100,
        ),
        "user_turns": mean_figure(
            [len(user_turns(r["turns"])) for r in counted],
            seed=seed,
            ids=[task_of[r["conversation_id"]] for r in counted],
            unit="task",
        ),
        "turn_variance": per_task(
            {task: turn_variance([len(user_turns(r["turns"])) for r in group]) for task, group in repeated.items()}
        ),
        "intent_coverage": mean_figure(
            [intent_coverage(r["turns"], tasks[r["intent"]]["text"]) for r in counted],
            seed=seed,
            ids=[task_of[r["conversation_id"]] for r in counted],
            unit="task",
            scale=100,
        ),
        "unigram_difference": per_task(
            {
                task: unigram_difference([" ".join(user_turns(r["turns"])) for r in group])
                for task, group in repeated.items()
            }
        ),
    }
