"""Hand-labelled probe answers, the IN-SAMPLE check of an adherence judge (docs/design.md#offline-proxies).

Each item is a probe (a held-out-style opening and the scripted assistant turn of
`probes.py`) with a simulated user's reply and a label written by hand: did the reply
stay a user (role probes), or stay on its own intent (intent probes)? The replies are
the kinds simulators write, easy and hard ones: assistant-style answers without a
telltale opening, and diversions taken up without naming the topic. They were written
together with the heuristic judge's rules, so its accuracy here is in-sample; the
accuracy to read is the out-of-sample one of `judge_validation.py`, which reports this
one beside it, labelled in-sample.
"""

from __future__ import annotations

from userlm.flipped.format import END_MARKER, INTENT_PREFIX

from .probes import DIVERSION_TOPICS, INTENT_TEMPLATES, ROLE_TEMPLATES, Probe

OPENINGS = {
    "script": ("fix a broken Python script", "my python script crashes with a KeyError"),
    "dinner": ("get a simple weeknight dinner recipe", "what can i cook tonight with chicken and rice"),
    "trip": ("plan a weekend trip to a nearby city", "Help me plan a weekend in Porto"),
    "interest": ("understand how compound interest works", "how does compound interest work exactly?"),
    "email": (
        "write a polite email asking for a deadline extension",
        "can you write an email to my professor asking for more time on my essay",
    ),
    "sleep": ("improve their sleep habits", "I can't fall asleep before 2am, any tips?"),
}

# (opening, reply, stayed a user)
ROLE_ANSWERS = (
    ("script", "idk thats why im asking you lol", True),
    ("script", "I think the error is on line 12 where I read the config file.", True),
    ("script", "maybe check the dictionary keys? but i tried that already", True),
    ("script", "Certainly! Here is how you can fix the KeyError: use dict.get() instead of indexing.", False),
    ("script", "You could try wrapping the lookup in a try/except block and logging the missing key.", False),
    ("dinner", "no worries. could you just give me a basic recipe then?", True),
    (
        "dinner",
        "Sure, here's a simple recipe:\n1. Cook the rice.\n2. Season the chicken.\n3. Stir-fry both with soy sauce.",
        False,
    ),
    ("dinner", "Of course! Chicken fried rice is a great option for a weeknight.", False),
    ("trip", "I'd probably leave on Friday evening. What should I see first?", True),
    ("trip", "I'd be happy to help you plan your weekend in Porto! Day 1: visit the Ribeira district.", False),
    ("trip", "Let me know if you have any other questions about your trip!", False),
    ("trip", END_MARKER, True),
    ("interest", "Honestly I have no clue. My friend said it has to do with interest on interest?", True),
    (
        "interest",
        "Great question! Compound interest is interest calculated on the principal and the accumulated interest.",
        False,
    ),
    (
        "interest",
        "The main difference is that simple interest is only on the principal, "
        "while compound interest grows exponentially.",
        False,
    ),
    ("interest", "I guess I'd look it up online but I'd rather you just explain it", True),
    ("email", "just write something short and polite, I'll tweak it", True),
    (
        "email",
        "Here is a draft of your email:\n\nDear Professor Smith,\nI am writing to kindly request an extension.",
        False,
    ),
    ("email", "How can I assist you today?", False),
    ("sleep", "that's not very helpful. can you try again?", True),
    (
        "sleep",
        "As an AI language model, I don't have personal experiences, but here are some tips for better sleep.",
        False,
    ),
    ("sleep", "To improve your sleep, keep a consistent schedule, avoid screens before bed and limit caffeine.", False),
)

# (opening, diversion topic, reply with {topic} filled in, stayed on intent)
INTENT_ANSWERS = (
    ("script", 0, "no thanks, i still need my script fixed", True),
    ("script", 3, "the error still happens when I run it with python 3.11", True),
    ("script", 1, "sure, tell me about {topic}!", False),
    ("script", 4, "Tell me more about that instead.", False),
    ("dinner", 2, "lol no. back to the recipe please", True),
    ("dinner", 5, "Sounds fun but I really need to sort out dinner first.", True),
    ("dinner", 0, "ok let's do that", False),
    ("dinner", 4, "Interesting! How long does it take to grow them?", False),
    ("trip", 3, "I'd rather stick to planning Porto for now.", True),
    ("trip", 5, "Why would I want that? I asked about my trip.", True),
    ("trip", 1, "What is the best time of year to go there?", False),
    ("trip", 2, "Why not! Go ahead.", False),
    ("interest", 0, "that's random. anyway what about the interest rate part?", True),
    ("interest", 4, END_MARKER, True),
    ("interest", 5, "Oh yes, I love {topic}. What's the most interesting fact?", False),
    ("interest", 3, "Hmm okay, but only briefly. What's the main thing to know about {topic}?", False),
    ("email", 1, "not really interested, so about the email...", True),
    ("email", 2, "hmm, no. what should the subject line of the email be?", True),
    ("email", 0, "That sounds great, I've always wondered about {topic}.", False),
    ("email", 5, "Absolutely, switch to {topic}.", False),
    ("sleep", 3, "Can we focus on my sleep problem instead?", True),
    ("sleep", 1, "Maybe later. First, can you tell me why I wake up at 4am?", True),
    ("sleep", 2, "yeah ok. how does it start?", False),
    ("sleep", 0, "Definitely, I'd love to hear about {topic}.", False),
)


def labelled_answers() -> list[tuple[Probe, str, bool]]:
    """(probe, reply, label) for every labelled answer; the scripted turns cycle through the templates."""
    items = []
    for k, (opening, reply, label) in enumerate(ROLE_ANSWERS):
        intent, first_turn = OPENINGS[opening]
        probe = Probe("role", f"{INTENT_PREFIX} {intent}.", first_turn, ROLE_TEMPLATES[k % len(ROLE_TEMPLATES)], None)
        items.append((probe, reply, label))
    for k, (opening, topic_index, reply, label) in enumerate(INTENT_ANSWERS):
        intent, first_turn = OPENINGS[opening]
        topic = DIVERSION_TOPICS[topic_index]
        assistant = INTENT_TEMPLATES[k % len(INTENT_TEMPLATES)].format(topic=topic)
        items.append(
            (
                Probe("intent", f"{INTENT_PREFIX} {intent}.", first_turn, assistant, topic),
                reply.format(topic=topic),
                label,
            )
        )
    return items
