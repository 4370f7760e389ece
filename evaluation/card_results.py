"""`userlm eval` puts its figures into each evaluated checkpoint's model card (issue 27).

A checkpoint that is a local folder with a card userlm-kit wrote (train/card.py, tagged
`user-simulator`) gets its results section replaced, never repeated: every figure of
metrics.json (any {"value", "n", "ci"}) with its n and 95% interval, the prompted base's
beside it with the paired difference, and where the report lies (relative to the
checkpoint when it lies inside it); and `model-index` entries in the header, one a figure.
Other folders (a downloaded base, a foreign model) are left as they are.
"""

from __future__ import annotations

import sys
from pathlib import Path

from userlm.train.card import CARD_FILE, RESULTS_END, RESULTS_START, write_card


def add_card_results(results: dict, out: Path) -> list[Path]:
    """Write the results into every userlm card among the checkpoints; returns the cards written."""
    from huggingface_hub import ModelCard

    written = []
    for name, checkpoint in results["checkpoints"].items():
        folder = Path(checkpoint["path"])
        if checkpoint.get("prompted") or not (folder / CARD_FILE).is_file():
            continue
        card = ModelCard.load(folder / CARD_FILE)
        if "user-simulator" not in (card.data.tags or []):
            continue
        head, _, rest = card.text.partition(RESULTS_START)
        tail = rest.partition(RESULTS_END)[2] if rest else ""
        card.text = f"{head.rstrip()}\n\n{section(results, name, folder, Path(out))}\n\n{tail.lstrip()}"
        card.data.eval_results = eval_results(results, name) or None
        written.append(write_card(folder, card))
        print(f"userlm eval: wrote the figures of {name} into {folder / CARD_FILE}", file=sys.stderr)
    return written


def figures(checkpoint: dict) -> dict[str, dict]:
    """Every figure of a checkpoint, by name: top-level ones, and those one level inside a plain group."""
    found = {}
    for key, entry in checkpoint.items():
        if is_figure(entry):
            found[key] = entry
        elif isinstance(entry, dict):
            found.update({f"{key}.{sub}": value for sub, value in entry.items() if is_figure(value)})
    return found


def is_figure(entry) -> bool:
    return isinstance(entry, dict) and "value" in entry and "n" in entry


def shown(entry: dict | None) -> str:
    """A figure as `value [lo, hi]`; a blank where there is none."""
    if not entry or entry.get("value") is None:
        return ""
    interval = entry.get("ci")
    return f"{entry['value']:.4g}" + (f" [{interval[0]:.4g}, {interval[1]:.4g}]" if interval else "")


def section(results: dict, name: str, folder: Path, out: Path) -> str:
    base = (results.get("differences") or {}).get("base")
    differences = (results.get("differences") or {}).get("checkpoints", {}).get(name, {})
    reference = figures(results["checkpoints"][base]) if base else {}
    rows = []
    for key, entry in figures(results["checkpoints"][name]).items():
        if entry["value"] is None:
            continue  # measured on nothing (no items of its kind in this data)
        rows.append(
            f"| {key} | {shown(entry)} | {entry['n']} | {shown(reference.get(key))} | {shown(differences.get(key))} |"
        )
    report = out.resolve() / "report.md"
    where = (
        f"[{report.relative_to(folder.resolve()).as_posix()}]({report.relative_to(folder.resolve()).as_posix()})"
        if report.is_relative_to(folder.resolve())
        else f"`report.md` in the evaluation's output folder `{out.name}` (outside this checkpoint)"
    )
    data = results["data"]
    return "\n".join(
        [
            RESULTS_START,
            "## Evaluation",
            "",
            f"`userlm eval` on `{Path(results['settings']['data']).name}` ({data['samples']} held-out samples), seed "
            f"{results['settings'].get('seed')}: each figure with its 95% "
            "interval and n, the items it was measured on. "
            + (
                f'The base is `{base}`, the prompted instruct model; "minus base" is '
                "the paired difference with its own interval."
                if base
                else "No prompted base was evaluated beside it."
            ),
            "",
            f"| figure | {name} | n | {base or 'base'} | minus base |",
            "|---|---|---|---|---|",
            *rows,
            "",
            f"The report, with the human reference, the published figures and the settings: {where}.",
            RESULTS_END,
        ]
    )


def eval_results(results: dict, name: str) -> list:
    """`model-index` entries: every figure with a number, on the evaluation's data."""
    from huggingface_hub import EvalResult

    data = Path(results["settings"]["data"]).name
    return [
        EvalResult(
            task_type="text-generation",
            task_name="User simulation",
            dataset_type="userlm-prep",
            dataset_name=data,
            dataset_split=data.split(".")[0],
            metric_type=key,
            metric_name=key.replace("_", " "),
            metric_value=entry["value"],
        )
        for key, entry in figures(results["checkpoints"][name]).items()
        if isinstance(entry["value"], (int, float))
    ]
