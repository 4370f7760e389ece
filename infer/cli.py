"""`userlm simulate` and `userlm chat`: their configs (`infer/config.py`) from a
YAML file, key=value words and flags."""

from __future__ import annotations

from userlm.config import parse_config
from userlm.summary import print_summary

from .config import ChatConfig, SimulateConfig


def simulate_main(words: list[str]) -> int:
    from .simulate import run_simulation, simulation_summary

    config = parse_config(
        SimulateConfig,
        words,
        prog="userlm simulate",
        description=(
            "Simulate conversations: for every intent (and persona), n_per_intent conversations between the "
            "simulator and the assistant under test; one JSON line each."
        ),
    )
    print_summary(simulation_summary(run_simulation(config)))
    return 0


def chat_main(words: list[str]) -> int:
    from .chat import run_chat

    config = parse_config(
        ChatConfig,
        words,
        prog="userlm chat",
        description=("You type the assistant's messages, the simulator answers as the user; Ctrl-D ends."),
    )
    run_chat(config)
    return 0
