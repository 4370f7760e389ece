"""Shared fixtures: the real embedded default model, tiny random Llamas, and a real
`transformers serve` on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The real SmolLM2-135M-Instruct, rebuilt once from the packaged GGUF."""
    from userlm.defaults import default_model_dir

    return default_model_dir()


@pytest.fixture(scope="session")
def default_tokenizer(default_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir)


@pytest.fixture(scope="session")
def sharegpt_file() -> Path:
    from userlm.defaults import sharegpt_path

    return sharegpt_path()


@pytest.fixture(scope="session")
def sharegpt_prep(sharegpt_file, tmp_path_factory):
    """`userlm prep` of the whole bundled ShareGPT file with prep's defaults (heuristic intents, no
    personas) and the Arrow copy, run once per session: its PrepResult. Its folder is shared by
    every test that asks for it: read it, never write into it (copy it first)."""
    from userlm.data_prep.config import PrepConfig
    from userlm.data_prep.pipeline import prep

    out = tmp_path_factory.mktemp("sharegpt-prep")
    return prep(PrepConfig(inputs=[sharegpt_file], out=out, progress=False, hf=True))


@pytest.fixture(scope="session")
def sharegpt_quickstart_prep(sharegpt_file, tmp_path_factory) -> Path:
    """The folder of `userlm prep` of the bundled ShareGPT file as the quickstart prepares it (the prep
    section of the shipped recipes/quickstart.yaml: measured personas, scope dropout), run once per
    session. Shared: read it, never write into it (copy it first)."""
    from userlm.config import checked_kwargs
    from userlm.data_prep.config import PrepConfig
    from userlm.data_prep.pipeline import prep
    from userlm.quickstart import shipped_section

    out = tmp_path_factory.mktemp("sharegpt-quickstart-prep")
    values = {**shipped_section("prep"), "inputs": [str(sharegpt_file)], "out": str(out), "progress": False}
    prep(PrepConfig(**checked_kwargs(PrepConfig, values)))
    return out


@pytest.fixture(scope="session")
def default_model_and_tokenizer():
    """The embedded SmolLM2 default as `userlm` loads it (eval mode), loaded once per session.
    Shared: never train it or change its weights or its tokenizer."""
    from userlm.infer.loading import load_model_and_tokenizer

    return load_model_and_tokenizer("default")


@pytest.fixture(scope="session")
def default_simulator(default_model_and_tokenizer):
    """A factory: default_simulator(template=None) -> a fresh `UserSimulator.load("default", template=...)`
    (its own prompt cache) around the session's one SmolLM2, so no test pays for loading it again
    (session-scoped, so module fixtures may use it too; each call builds a new simulator)."""
    from userlm.infer.loading import resolve_template
    from userlm.infer.simulator import UserSimulator

    model, tokenizer = default_model_and_tokenizer

    def build(template: str | None = None) -> UserSimulator:
        return UserSimulator(model, tokenizer, resolve_template(tokenizer, template, "default"), name="default")

    return build


@pytest.fixture
def userlm_cli(capsys):
    """A factory: userlm_cli(*words) -> CompletedProcess of `userlm WORDS` run in this process
    (`userlm.cli.main`, what the console script calls), its stdout and stderr captured. For the
    many refusal cases of a command; one test per command still runs the real console script."""
    from userlm.cli import main

    def run(*words: str) -> subprocess.CompletedProcess:
        capsys.readouterr()  # what the test printed before is not this command's
        code = main(list(words))
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(["userlm", *words], code, captured.out, captured.err)

    return run


def make_tiny_llama(folder: Path, tokenizer, *, hidden_size: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """A random Llama with the given tokenizer's vocabulary, saved with it to `folder`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    config.architectures = ["LlamaForCausalLM"]
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_llama(tmp_path, default_tokenizer):
    """A factory: tiny_llama(name="m", **config) -> folder of a random Llama with SmolLM2's tokenizer."""

    def build(name: str = "tiny-llama", **kwargs) -> Path:
        return make_tiny_llama(tmp_path / name, default_tokenizer, **kwargs)

    return build


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"no answer from {url} within {timeout} s")


@pytest.fixture(scope="session")
def transformers_server(default_model_dir, tmp_path_factory):
    """A real `transformers serve` of the SmolLM2 default on loopback; yields its base URL (…/v1)."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [
                Path(sys.executable).parent / "transformers",
                "serve",
                str(default_model_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--device",
                "cpu",
                "--default-seed",
                "0",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(process)


TRAIN_CONVERSATIONS = [
    ("c1", ["how do i sort a list in python", "and in reverse order?"], ["Use sorted(xs).", "Pass reverse=True."]),
    ("c2", ["write a haiku about rain"], ["Soft rain on the roof."]),
    ("c3", ["whats the capital of peru", "thanks! population?", "ok bye"], ["Lima.", "About 10 million.", "Bye!"]),
    ("c4", ["fix my sql: selct * from t"], ["SELECT * FROM t;"]),
]


def conversation_record(conversation_id: str, users: list[str], assistants: list[str], intent: str, meta: dict) -> dict:
    """A hand-made conversation record (docs/design.md#conversation-records)
    alternating the given user and assistant turns."""
    messages = []
    for user, assistant in zip(users, assistants):
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {
        "conversation_id": conversation_id,
        "user_id": None,
        "source": "test",
        "language": "en",
        "messages": messages,
        "system": None,
        "intent": intent,
        "intent_source": "column",
        "persona": None,
        "persona_attrs": None,
        "meta": meta,
    }


def train_conversation_records() -> list[dict]:
    """Small hand-made conversation records for the train tests."""
    intent = "You are a user chatting with an assistant language model to get quick answers."
    return [conversation_record(cid, users, assistants, intent, {}) for cid, users, assistants in TRAIN_CONVERSATIONS]


@pytest.fixture
def flipped_samples_dir(tmp_path) -> Path:
    """A folder shaped like `userlm prep` output: train.jsonl and validation.jsonl of flipped samples."""
    return write_flipped_samples(tmp_path / "prep")


def write_flipped_samples(folder: Path) -> Path:
    """Write `train_conversation_records` into `folder` as `userlm prep` would (train.jsonl, validation.jsonl)."""
    import json

    from userlm.flipped.format import flip

    folder.mkdir()
    records = train_conversation_records()
    splits = {"train": records, "validation": records[:2]}
    for split, rows in splits.items():
        with open(folder / f"{split}.jsonl", "w") as sink:
            for record in rows:
                for sample in flip(record, split):
                    sink.write(json.dumps(sample) + "\n")
    return folder


EVAL_CONVERSATIONS = [
    # (id, intent tail, user turns, assistant turns, the real user left after the last turn)
    (
        "e1",
        "sort a list in Python",
        ["how do i sort a list in python", "and in reverse order?"],
        ["Use sorted(xs).", "Pass reverse=True."],
        True,
    ),
    (
        "e2",
        "get a short poem about rain",
        ["write a haiku about rain"],
        ["Soft rain on the roof,\nquiet streets."],
        True,
    ),
    (
        "e3",
        "learn facts about Peru",
        ["whats the capital of peru", "thanks! population?", "and the currency"],
        ["Lima.", "About 34 million.", "The sol."],
        False,
    ),
    (
        "e4",
        "fix a broken SQL query",
        ["fix my sql: selct * from t", "still fails on postgres"],
        ["SELECT * FROM t;", "Check the table name."],
        True,
    ),
]


def eval_conversation_records() -> list[dict]:
    """Hand-made held-out conversations for the evaluation tests: 7 decision points, 3 of them END.

    e1: continue, END; e2: END; e3 (a cut log, meta.ends False): continue, continue; e4: continue, END.
    """
    return [
        conversation_record(
            cid,
            users,
            assistants,
            f"You are a user chatting with an assistant language model to {goal}.",
            {"ends": ends},
        )
        for cid, goal, users, assistants, ends in EVAL_CONVERSATIONS
    ]


@pytest.fixture(scope="session")
def eval_test_file(tmp_path_factory) -> Path:
    """A test.jsonl of flipped samples from `eval_conversation_records`, as `userlm prep` writes it (read-only)."""
    import json

    from userlm.flipped.format import flip

    path = tmp_path_factory.mktemp("eval-data") / "test.jsonl"
    with open(path, "w") as sink:
        for record in eval_conversation_records():
            for sample in flip(record, "test"):
                sink.write(json.dumps(sample) + "\n")
    return path


def make_forced_simulator(folder: Path, tokenizer, *, always_end: bool, word: str = "ok", flipped: bool = True) -> Path:
    """A tiny Llama whose output is fixed whatever the prompt, saved as a chatml simulator checkpoint
    (or, with flipped=False, as an ordinary model that keeps the tokenizer's own chat template).

    always_end: every turn is `<|endconversation|>` then `<|im_end|>`; otherwise every turn is
    `word` then `<|im_end|>`, so the model never ends. The layers' output projections are zero,
    so the last hidden state is the current token's embedding; embeddings put every token on
    dimension 0 except the turn's own token, on dimension 1; the output layer maps dimension 0
    to the turn's token and dimension 1 to the end-of-turn token.
    """
    import copy

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from userlm.flipped.format import END_MARKER
    from userlm.flipped.templates import CHATML, attach_template

    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.add_tokens([END_MARKER], special_tokens=True)
    if flipped:
        attach_template(tokenizer, CHATML)
    turn_token = tokenizer.convert_tokens_to_ids(END_MARKER) if always_end else tokenizer.convert_tokens_to_ids(word)
    eot = tokenizer.convert_tokens_to_ids(CHATML.eot_token)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings = model.model.embed_tokens.weight
        embeddings.zero_()
        embeddings[:, 0] = 1.0
        embeddings[turn_token, 0] = 0.0
        embeddings[turn_token, 1] = 1.0
        model.model.norm.weight.zero_()
        model.model.norm.weight[:2] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[turn_token, 0] = 50.0
        model.lm_head.weight[eot, 1] = 50.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def forced_simulator(tmp_path_factory, default_tokenizer):
    """A factory: forced_simulator(always_end=True|False, word=..., flipped=...) -> folder of a model
    that always / never ends; built once per session per arguments (treat the folders as read-only)."""
    built: dict[tuple, Path] = {}

    def build(*, always_end: bool, word: str = "ok", flipped: bool = True) -> Path:
        key = (always_end, word, flipped)
        if key not in built:
            folder = tmp_path_factory.mktemp(
                f"forced-{'end' if always_end else word}-{'flipped' if flipped else 'plain'}"
            )
            built[key] = make_forced_simulator(
                folder, default_tokenizer, always_end=always_end, word=word, flipped=flipped
            )
        return built[key]

    return build


@pytest.fixture(scope="session")
def llama3_style_tokenizer(default_tokenizer):
    """SmolLM2's tokenizer plus Llama-3's chat special tokens: no Llama-3 tokenizer can be fetched here."""
    import copy

    tokenizer = copy.deepcopy(default_tokenizer)
    tokenizer.add_tokens(["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], special_tokens=True)
    return tokenizer


@pytest.fixture
def tiny_llama_for(tmp_path):
    """A factory: tiny_llama_for(tokenizer, name="m", **config) -> folder of a random Llama with that tokenizer."""

    def build(tokenizer, name: str = "tiny-llama-tok", **kwargs) -> Path:
        return make_tiny_llama(tmp_path / name, tokenizer, **kwargs)

    return build


def make_programmed_simulator(folder: Path, tokenizer, start: dict, transitions: dict) -> Path:
    """A real Llama programmed as a bigram model, saved as a chatml simulator checkpoint with the end marker.

    The next-token logits depend only on the current token: the layers' output projections
    are zero, so the last hidden state is the current token's embedding. Each token named in
    `transitions` gets its own embedding direction, with logits `transitions[token]`; every
    other token (the whole prompt) shares direction 0, with logits `start`. Token texts must
    be single tokens.
    """
    import copy

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from userlm.flipped.format import END_MARKER
    from userlm.flipped.templates import CHATML, attach_template

    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.add_tokens([END_MARKER], special_tokens=True)
    attach_template(tokenizer, CHATML)
    hidden = 64
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(config)

    def token_id(text: str) -> int:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, f"{text!r} is not one token"
        return ids[0]

    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings = model.model.embed_tokens.weight
        embeddings.zero_()
        embeddings[:, 0] = 1.0
        model.lm_head.weight.zero_()
        scale = hidden**0.5  # RMSNorm turns a one-hot embedding into sqrt(hidden) times it
        for state, (source, logits) in enumerate([(None, start), *transitions.items()]):
            if source is not None:
                embeddings[token_id(source)] = 0.0
                embeddings[token_id(source), state] = 1.0
            for target, logit in logits.items():
                model.lm_head.weight[token_id(target), state] = logit / scale
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def programmed_simulator(tmp_path, default_tokenizer):
    """A factory: programmed_simulator(start, transitions, name=...) -> folder of a bigram-programmed simulator."""

    def build(start: dict, transitions: dict, name: str = "programmed") -> Path:
        return make_programmed_simulator(tmp_path / name, default_tokenizer, start, transitions)

    return build


# What conftest's intent writer makes of its one answer, "Plan a trip.", as an LLM intent.
INTENT_WRITER_INTENT = "You are a user chatting with an assistant language model to plan a trip."


@pytest.fixture(scope="session")
def intent_writer(default_tokenizer, tmp_path_factory) -> Path:
    """A tiny Llama that answers "Plan a trip." to any chat request, with SmolLM2's own chat template:
    the endpoint of tests about prep's LLM plumbing (routing, caches, resuming), which need answers
    in milliseconds rather than SmolLM2's generations. Shared: read-only."""
    folder = tmp_path_factory.mktemp("intent-writer") / "intent-writer"
    eot = default_tokenizer.eos_token
    transitions = {"Plan": {" a": 30}, " a": {" trip": 30}, " trip": {".": 30}, ".": {eot: 30}}
    make_programmed_simulator(folder, default_tokenizer, {"Plan": 30}, transitions)
    default_tokenizer.save_pretrained(folder)  # an ordinary chat model: SmolLM2's template, not the flipped one
    return folder


# The simulator the `userlm serve` tests serve: a programmed chatml persona that wants to leave at
# once; under the default guardrails (no end before 2 user turns) it opens with one of two turns
# instead, and leaves at its third.
SERVED_INTENT = "You are a user chatting with an assistant language model to cook dinner."
SERVED_OPENINGS = {"Please help me now", "Hello there now"}


@pytest.fixture(scope="session")
def served_persona(tmp_path_factory, default_tokenizer) -> Path:
    """The folder of that simulator, named `persona` (the model name its server serves)."""
    from userlm.flipped.format import END_MARKER

    eot = "<|im_end|>"
    start = {END_MARKER: 30, "Please": 25, "Hello": 25}
    transitions = {
        END_MARKER: {eot: 30},
        "Please": {" help": 30},
        " help": {" me": 30},
        " me": {" now": 30},
        " now": {eot: 30},
        "Hello": {" there": 30},
        " there": {" now": 30},
    }
    return make_programmed_simulator(
        tmp_path_factory.mktemp("served") / "persona", default_tokenizer, start, transitions
    )


def serve(folder: Path, log: Path):
    """Start a real `transformers serve` of `folder` on loopback; returns (process, base URL ending in /v1)."""
    port = free_port()
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [
                Path(sys.executable).parent / "transformers",
                "serve",
                str(folder),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--device",
                "cpu",
                "--default-seed",
                "0",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process)
    except Exception:
        process.kill()
        raise
    return process, f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def serve_folder(tmp_path):
    """A factory: serve_folder(folder) -> base URL (…/v1) of a real `transformers serve`
    of that folder, stopped after the test."""
    processes = []

    def start(folder: Path) -> str:
        process, url = serve(folder, tmp_path / f"serve-{len(processes)}.log")
        processes.append(process)
        return url

    yield start
    for process in processes:
        stop(process)


# UserLM-8b's own chat_template.jinja, verbatim (docs/design.md#chat-templates): a different text from
# userlm-llama3's that renders exactly like it.
USERLM_8B_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}\n"
    "{{ message['content'] }}<|eot_id|>{% endfor %}{{ '<|start_header_id|>user<|end_header_id|>' }}\n"
)
LLAMA3_SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
)


def userlm_8b_tokenizer(tokenizer):
    """SmolLM2's vocabulary shaped like UserLM-8b's tokenizer: Llama-3's special tokens (BOS, EOS
    `<|end_of_text|>`, headers, `<|eot_id|>`), no pad token, and `<|endconversation|>` as an
    ordinary added token (not special, so it survives skip_special_tokens)."""
    import copy

    from transformers import AddedToken

    from userlm.flipped.format import END_MARKER

    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in LLAMA3_SPECIAL_TOKENS], special_tokens=True
    )
    tokenizer.add_tokens([AddedToken(END_MARKER, special=False, normalized=False)])
    tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = "<|begin_of_text|>", "<|end_of_text|>", None
    tokenizer.chat_template = USERLM_8B_CHAT_TEMPLATE
    return tokenizer


def make_userlm_8b_like(folder: Path, tokenizer, start: dict | None = None, transitions: dict | None = None) -> Path:
    """A folder shaped like the real microsoft/UserLM-8b: its tokenizer (above), its own
    chat_template.jinja, and `config.json` naming `<|end_of_text|>` as EOS
    while `generation_config.json` names `<|eot_id|>`. Random weights, or, given `start` and
    `transitions`, a bigram-programmed Llama (see `make_programmed_simulator`)."""
    import json

    tokenizer = userlm_8b_tokenizer(tokenizer)
    if start is None:
        make_tiny_llama(folder, tokenizer)
    else:
        # The programmed builder makes the end marker special and attaches chatml: the tokenizer
        # saved below (same ids) puts back UserLM-8b's.
        make_programmed_simulator(folder, tokenizer, start, transitions or {})
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(USERLM_8B_CHAT_TEMPLATE)
    config = json.loads((folder / "config.json").read_text())
    config["eos_token_id"] = tokenizer.convert_tokens_to_ids("<|end_of_text|>")
    if start is not None:
        # Heads of 32 (the same projection shapes), which vLLM's CPU attention supports (not 16);
        # the programmed model's attention output is zero, so its heads do not change what it writes.
        config.update(num_attention_heads=2, num_key_value_heads=1, head_dim=32)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    generation = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|eot_id|>"),
        "do_sample": True,
        "temperature": 0.6,
        "top_p": 0.9,
    }
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2))
    return folder


@pytest.fixture
def userlm_8b_like(tmp_path, default_tokenizer):
    """A factory: userlm_8b_like(start=None, transitions=None, name=...) -> folder shaped like microsoft/UserLM-8b."""

    def build(start: dict | None = None, transitions: dict | None = None, name: str = "userlm-8b-like") -> Path:
        return make_userlm_8b_like(tmp_path / name, default_tokenizer, start, transitions)

    return build


@pytest.fixture(scope="session")
def userlm_server(tmp_path_factory):
    """A factory: userlm_server(simulator, *flags, env={}) -> base URL (…/v1) of a real `userlm serve`
    on loopback, started once per session per arguments and stopped at the end (its log is kept beside)."""
    started: dict[tuple, tuple[subprocess.Popen, str]] = {}

    def start(simulator, *flags: str, env: dict | None = None) -> str:
        key = (str(simulator), flags, tuple(sorted((env or {}).items())))
        if key not in started:
            port = free_port()
            log = tmp_path_factory.mktemp("userlm-serve") / "serve.log"
            command = [sys.executable, "-m", "userlm.cli", "serve", str(simulator), "--port", str(port), *flags]
            with open(log, "wb") as sink:
                process = subprocess.Popen(
                    command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
                )
            try:
                wait_for_http(f"http://127.0.0.1:{port}/health", process)
            except Exception:
                process.kill()
                raise
            started[key] = (process, f"http://127.0.0.1:{port}/v1")
        return started[key][1]

    yield start
    for process, _ in started.values():
        stop(process)


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    """Ask a server started by a fixture to stop; kill it if it does not within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()


def vllm_python() -> Path | None:
    """The python of the separate vLLM environment (`make vllm-env`), or None where it is absent."""
    named = os.environ.get("USERLM_VLLM_PYTHON")
    if named:
        return Path(named) if Path(named).exists() else None
    default = Path.home() / ".cache" / "userlm-kit" / "vllm-venv"
    return default / "bin" / "python" if (default / ".ready").exists() else None


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    """A factory: vllm_server(folder, name) -> base URL (…/v1) of a real vLLM (CPU) serving `folder` as
    `name` on loopback, started once per session per folder. Skips, saying why, where the vLLM
    environment is absent (`make vllm-env` builds it; CI's .ci/run does)."""
    python = vllm_python()
    if python is None:
        pytest.skip("no vLLM environment: run `make vllm-env` (or set USERLM_VLLM_PYTHON) to test against a real vLLM")
    started: dict[str, tuple[subprocess.Popen, str]] = {}

    def start(folder: Path, name: str) -> str:
        if str(folder) not in started:
            port = free_port()
            log = tmp_path_factory.mktemp("vllm") / "vllm.log"
            env = {**os.environ, "VLLM_HOST_IP": "127.0.0.1", "VLLM_CPU_KVCACHE_SPACE": "2", "HF_HUB_OFFLINE": "1"}
            command = [
                str(python),
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                str(folder),
                "--served-model-name",
                name,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--max-model-len",
                "2048",
                "--dtype",
                "float32",
                "--enforce-eager",
            ]
            with open(log, "wb") as sink:
                process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
            try:
                wait_for_http(f"http://127.0.0.1:{port}/health", process, timeout=300)
            except Exception as error:
                process.kill()
                raise RuntimeError(f"vLLM did not start: {error}; its log: {log.read_text()[-3000:]}") from None
            started[str(folder)] = (process, f"http://127.0.0.1:{port}/v1")
        return started[str(folder)][1]

    yield start
    for process, _ in started.values():
        stop(process, timeout=30)
