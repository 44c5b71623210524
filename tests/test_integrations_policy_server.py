"""`forage serve policy`'s tool calling: the parser and chat template picked per model, and real `openai` tool calls.

The vLLM server is the session's one (tests/_agents_helpers.py), started with ``tool_call_parser="auto"``
exactly as ``forage serve policy`` starts it: ``--enable-auto-tool-choice --tool-call-parser hermes`` and
Forage's Hermes ChatML template (SmolLM2's own ignores ``tools=``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import forage  # noqa: F401
from forage.agents.vllm_server import HERMES_CHATML_TEMPLATE, VLLMServer, tool_calling_setup
from forage.tools import HermesFormat, tool
from _agents_helpers import model_dir, tokenizer, vllm_server

openai = pytest.importorskip("openai", reason="the openai client is not installed (pip install openai)")


@tool
def search(query: str) -> str:
    """Search the encyclopedia for a query.

    Args:
        query: what to look for
    """
    return query


TOOLS = [search.schema()]
FEW_SHOT = [
    {"role": "system", "content": "You answer questions by calling tools."},
    {"role": "user", "content": "Search for: tallest mountain"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "search", "arguments": '{"query": "tallest mountain"}'}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "Mount Everest is the tallest mountain."},
    {"role": "assistant", "content": "Mount Everest."},
    {"role": "user", "content": "Search for: largest ocean"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c2", "type": "function", "function": {"name": "search", "arguments": '{"query": "largest ocean"}'}}]},
    {"role": "tool", "tool_call_id": "c2", "content": "The Pacific is the largest ocean."},
    {"role": "assistant", "content": "The Pacific Ocean."},
    {"role": "user", "content": "Search for: capital of France"},
]


# -- picking the parser and template (no server) ---------------------------------------------------

def _folder(tmp_path: Path, name: str, template: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "chat_template.jinja").write_text(template)
    return d


def test_parser_follows_the_chat_template(tmp_path):
    parser, template = tool_calling_setup(model_dir())
    assert parser == "hermes" and template is not None and Path(template).read_text() == HERMES_CHATML_TEMPLATE
    qwen = _folder(tmp_path, "qwen", "{% if tools %}<tools>{% endif %}<|im_start|>... <tool_call>\n{{ tc }}</tool_call>")
    assert tool_calling_setup(qwen) == ("hermes", None)     # already writes <tool_call>: its own template
    llama = _folder(tmp_path, "llama", "<|start_header_id|>{% if tools %}ipython{% endif %}<|python_tag|>")
    assert tool_calling_setup(llama) == ("llama3_json", None)
    other = _folder(tmp_path, "other", "{{ messages[0]['content'] }}")
    assert tool_calling_setup(other) == (None, None)
    with pytest.raises(ValueError, match="tool-call parser"):
        VLLMServer(other, tool_call_parser="auto")


def test_server_command_has_the_tool_flags():
    cmd = VLLMServer(model_dir(), port=1, tool_call_parser="auto").command()
    i = cmd.index("--tool-call-parser")
    assert "--enable-auto-tool-choice" in cmd and cmd[i + 1] == "hermes"
    assert Path(cmd[cmd.index("--chat-template") + 1]).read_text() == HERMES_CHATML_TEMPLATE
    plain = VLLMServer(model_dir(), port=1).command()       # the old default is unchanged
    assert "--enable-auto-tool-choice" not in plain and "--chat-template" not in plain


def test_template_is_smollm2s_own_without_tools_and_renders_tools_like_the_envs():
    tok = tokenizer()
    for msgs in ([{"role": "user", "content": "hi"}],
                 [{"role": "system", "content": "S"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]):
        own = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ours = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, chat_template=HERMES_CHATML_TEMPLATE)
        assert ours == own
    text = tok.apply_chat_template(FEW_SHOT[:4], tools=TOOLS, tokenize=False, chat_template=HERMES_CHATML_TEMPLATE)
    assert HermesFormat().instructions([search]) in text    # the same words a Forage env's system prompt has
    assert ('<tool_call>\n{"name": "search", "arguments": {"query": "tallest mountain"}}\n</tool_call>' in text)
    assert "<|im_start|>user\n<tool_response>\nMount Everest is the tallest mountain.\n</tool_response><|im_end|>" in text


# -- the real server and the real openai client ----------------------------------------------------

@pytest.fixture(scope="module")
def client():
    server = vllm_server()
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=300)
    yield c, c.models.list().data[0].id
    c.close()


@pytest.mark.vllm
@pytest.mark.slow
def test_openai_client_tool_call_auto_is_parsed(client):
    c, model = client
    r = c.chat.completions.create(model=model, messages=FEW_SHOT, tools=TOOLS, tool_choice="auto",
                                  temperature=0, max_tokens=48)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls, choice
    got = [(t.function.name, json.loads(t.function.arguments)) for t in choice.message.tool_calls]
    # oracle: the same prompt as raw text, greedy, parsed by Forage's own Hermes parser (not vLLM's)
    prompt = tokenizer().apply_chat_template(FEW_SHOT, tools=TOOLS, tokenize=False, add_generation_prompt=True,
                                             chat_template=HERMES_CHATML_TEMPLATE)
    raw = c.completions.create(model=model, prompt=prompt, temperature=0, max_tokens=48,
                               extra_body={"skip_special_tokens": False}).choices[0].text
    parsed = HermesFormat().parse(raw, {})
    assert parsed.calls and got == [(k.name, k.arguments) for k in parsed.calls], raw
    assert "<tool_call>" not in (choice.message.content or "")


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "search"}}])
def test_openai_client_forced_tool_choice(client, tool_choice):
    c, model = client
    r = c.chat.completions.create(model=model, messages=FEW_SHOT[:1] + FEW_SHOT[-1:], tools=TOOLS,
                                  tool_choice=tool_choice, temperature=0, max_tokens=48)
    calls = r.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "search" and isinstance(json.loads(calls[0].function.arguments), dict)


@pytest.mark.vllm
@pytest.mark.slow
def test_tool_choice_none_returns_text(client):
    c, model = client
    r = c.chat.completions.create(model=model, messages=FEW_SHOT[-1:], tools=TOOLS, tool_choice="none",
                                  temperature=0, max_tokens=8)
    assert not r.choices[0].message.tool_calls and r.choices[0].message.content


@pytest.mark.vllm
@pytest.mark.slow
def test_forage_openai_policy_with_tools_against_the_server():
    from forage.agents import RolloutConfig
    from forage.agents.openai_api import ChatRunner, OpenAIPolicy

    async def main():
        policy = OpenAIPolicy(vllm_server().url, use_tools=True)
        try:
            return await ChatRunner(policy, RolloutConfig(max_new_tokens=32, max_turns=2)).run("forage/LookupQA-v0", [0, 1])
        finally:
            await policy.aclose()

    trajs = asyncio.run(main())
    assert len(trajs) == 2 and all(t.error is None for t in trajs), [t.error for t in trajs]
    assert all(t.num_turns >= 1 for t in trajs)


def test_cli_serve_policy_refuses_a_template_it_cannot_match(tmp_path):
    from typer.testing import CliRunner

    from forage.cli import app

    folder = _folder(tmp_path, "odd", "{{ messages[0]['content'] }}")
    r = CliRunner().invoke(app, ["serve", "policy", "--model", str(folder), "--port", "1"])
    assert r.exit_code == 2 and "tool-call parser" in r.output and "--tool-call-parser none" in r.output
