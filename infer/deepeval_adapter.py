"""A `userlm serve` simulator as DeepEval's simulated user (`ConversationSimulator`).

    import os
    os.environ["DEEPEVAL_TELEMETRY_OPT_OUT"] = "YES"       # before deepeval is imported
    from deepeval.conversation_simulator import ConversationSimulator
    from userlm.infer.deepeval_adapter import ServedUser

    user = ServedUser(base_url="http://127.0.0.1:8000/v1", model="persona")
    simulator = ConversationSimulator(
        user_intentions={"You are a user chatting with an assistant language model to plan a trip.": 2},
        user_profiles=["Writes short, lowercase messages."],     # the persona block
        simulator_model=user,
    )
    cases = simulator.simulate(model_callback=assistant, min_turns=1, max_turns=10, stopping_criteria="the user leaves")

DeepEval drives its simulated user with prompts written for a prompted LLM (write a
scenario, write the first input, is the conversation complete?, write the next input),
each with a pydantic schema for the answer. `ServedUser` answers each by its schema, from
the served simulator rather than by following the prompt's words: the scenario is the
simulator's system message (the intent, and the profile as persona); an input is the next
user turn of the conversation DeepEval shows; and "is it complete" is answered by drafting
that next turn: the conversation is complete when the simulated user leaves, otherwise the
drafted turn is kept and given as the next input. Pass any `stopping_criteria` so that
DeepEval asks; its text is not used.
"""

from __future__ import annotations

import json
from typing import Any

import openai
from deepeval.conversation_simulator.schema import ConversationCompletion, Scenario, SimulatedInput, UserProfile
from deepeval.models import DeepEvalBaseLLM

from userlm.flipped.format import system_text

# Where DeepEval's prompts show the conversation so far (as JSON, natural roles).
HISTORY_MARKERS = ("Previous Conversation:", "Conversation History:")


class ServedUser(DeepEvalBaseLLM):
    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "EMPTY",
        seed: int | None = None,
        timeout: float = 120.0,
        **request: Any,
    ):
        self.base_url, self.api_key, self.seed, self.timeout = base_url, api_key, seed, timeout
        # Extra body fields for every request (e.g. guardrails={"min_turns_before_end": 3}).
        self.request = request
        self._scenarios: list[str] = []
        # Turns drafted to answer "is it complete?", given as the next input: (scenario, history) -> text.
        self._drafted: dict[tuple[str, str], str] = {}
        # Each conversation's first user turn -> its scenario.
        self._scenario_of: dict[str, str] = {}
        super().__init__(model_name=model)

    def load_model(self):
        return openai.OpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout)

    def get_model_name(self) -> str:
        return f"userlm serve: {self.model_name}"

    def generate(self, prompt: str, schema=None):
        answer = self._answer_without_model(prompt, schema)
        if answer is None:
            messages, key = self._conversation(prompt)
            answer = self._already_drafted(schema, key) or self._read(schema, key, self._complete(self.model, messages))
        return answer

    async def a_generate(self, prompt: str, schema=None):
        answer = self._answer_without_model(prompt, schema)
        if answer is None:
            messages, key = self._conversation(prompt)
            answer = self._already_drafted(schema, key)
            if answer is None:
                async with openai.AsyncOpenAI(
                    base_url=self.base_url, api_key=self.api_key, timeout=self.timeout
                ) as client:
                    answer = self._read(schema, key, await self._complete(client, messages))
        return answer

    def _answer_without_model(self, prompt: str, schema):
        if schema is UserProfile:
            # No profile is invented: the items given become the persona as they are.
            items = prompt.rsplit("User Profile Items:", 1)[-1].rsplit("JSON Output:", 1)[0]
            return UserProfile(user_profile=items.strip().strip('"'))
        if schema is Scenario:
            profile = _quoted_after(prompt, "User Profile:")
            intent = _quoted_after(prompt, "Intent:")
            scenario = system_text(intent, profile or None)
            self._scenarios.append(scenario)
            return Scenario(scenario=scenario)
        if schema not in (SimulatedInput, ConversationCompletion):
            raise TypeError(
                f"ServedUser answers DeepEval's conversation simulator only, not {getattr(schema, '__name__', schema)}."
            )
        return None

    def _conversation(self, prompt: str) -> tuple[list[dict], tuple[str, str]]:
        """The simulator's messages (the scenario as system message, then the conversation DeepEval's
        prompt shows) and the key of that point in that conversation."""
        history: list[dict] = []
        for marker in HISTORY_MARKERS:
            if marker in prompt:
                # The last one: DeepEval shows an example conversation first.
                history, _ = json.JSONDecoder().raw_decode(prompt, prompt.index("[", prompt.rindex(marker)))
        known = [s for s in self._scenarios if s in prompt]
        # The completion check shows no scenario: the conversation's first user
        # turn, which this adapter wrote, tells it.
        first = next((m["content"] for m in history if m["role"] == "user"), None)
        scenario = max(known, key=len) if known else self._scenario_of.get(first)
        if scenario is None:
            raise ValueError(
                "ServedUser sees a DeepEval prompt for a conversation it did not start; "
                "use one ServedUser per ConversationSimulator."
            )
        messages = [
            {"role": "system", "content": scenario},
            *({"role": m["role"], "content": m["content"]} for m in history),
        ]
        return messages, (scenario, json.dumps(history))

    def _already_drafted(self, schema, key: tuple[str, str]):
        """The turn drafted to answer "is it complete?", as the next input."""
        if schema is SimulatedInput and key in self._drafted:
            return SimulatedInput(simulated_input=self._drafted.pop(key))
        return None

    def _complete(self, client, messages: list[dict]):
        # A seed per point in the conversation: reproducible, yet not the same draw at every turn.
        seed = None if self.seed is None else self.seed + len(messages)
        return client.chat.completions.create(
            model=self.model_name, messages=messages, seed=seed, extra_body=self.request or None
        )

    def _read(self, schema, key: tuple[str, str], response):
        choice = response.choices[0]
        ended = bool((choice.model_extra or {}).get("userlm", {}).get("ended"))
        text = choice.message.content or ""
        scenario, history = key
        if history == "[]":
            self._scenario_of[text] = scenario
        if schema is ConversationCompletion:
            if ended:
                return ConversationCompletion(is_complete=True, reason="The simulated user left the conversation.")
            self._drafted[key] = text
            return ConversationCompletion(is_complete=False, reason="The simulated user goes on.")
        return SimulatedInput(simulated_input=text)


def _quoted_after(prompt: str, label: str) -> str:
    """The value DeepEval wrote as `label "value"` on its own line (the last such line)."""
    start = prompt.rindex(label) + len(label)
    line_end = prompt.find("\n", start)
    value = prompt[start : line_end if line_end >= 0 else None].strip()
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
