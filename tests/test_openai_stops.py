"""OpenAI's chat API takes at most 4 stop strings: OpenAIPolicy sends the first 4 and cuts the rest itself.

The oracle is hand-worked: for each fake completion the expected cut was worked out by reading the text.
The server here is a real HTTP server on 127.0.0.1 that, like OpenAI, answers 400 to more than 4 stops
and drops the stop string it cut at.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from forage.agents import OpenAIPolicy, SamplingParams
from forage.agents.openai_api import MAX_API_STOPS, ChatRunner, cut_at_stops

SIX = ["</a>", "</b>", "</c>", "</d>", "</e>", "</f>"]


def test_cut_at_stops_by_hand():
    # "x</e>y</b>z": </e> is complete at 5, </b> at 10 -> cut before </e>
    assert cut_at_stops("x</e>y</b>z", SIX) == ("x", "</e>")
    # no stop in it: unchanged
    assert cut_at_stops("plain text", SIX) == ("plain text", None)
    # "ab</f>" ends at 6 and "</f>" ends at 6: a tie in completion, the earlier start wins (the longer one)
    assert cut_at_stops("xab</f>", ["</f>", "ab</f>"]) == ("x", "ab</f>")
    # "</c>" is complete at 6, "<</c>>x" (which starts earlier, at 1) only at 8: the first complete one wins
    assert cut_at_stops("1<</c>>x", ["<</c>>x", "</c>"]) == ("1<", "</c>")
    # empty stops are ignored
    assert cut_at_stops("abc", ["", "c"]) == ("ab", "c")


def fake_openai(content: str, requests: list[dict[str, Any]]):
    """/v1/chat/completions answering ``content`` cut at the request's stops, refusing more than 4 (as OpenAI does)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from forage.asgi_thread import ThreadedASGIServer

    async def completions(request: Request) -> JSONResponse:
        body = await request.json()
        requests.append(body)
        stop = body.get("stop") or []
        if len(stop) > 4:
            return JSONResponse({"error": {"message": "'stop' accepts at most 4 sequences"}}, status_code=400)
        text, matched = cut_at_stops(content, stop)
        choice = {"index": 0, "finish_reason": "stop" if matched else "length",
                  "message": {"role": "assistant", "content": text}}
        return JSONResponse({"choices": [choice], "usage": {"completion_tokens": 7}})

    return ThreadedASGIServer(Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])]))


def chat(server_url: str, stop: list[str], **kwargs: Any) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        policy = OpenAIPolicy(server_url, model="stub", retries=0, **kwargs)
        try:
            return await policy.chat([{"role": "user", "content": "hi"}], None, SamplingParams(max_tokens=32), stop=stop)
        finally:
            await policy.aclose()

    return asyncio.run(main())


@pytest.mark.parametrize("content,want,finish,said", [
    # only a stop the server was not sent (</e>, 5th) is in it: cut here, before </e>
    ("call</e> made-up results</a>", "call", "stop", "</e>"),
    # the server cut at </b> (sent); an unsent </f> comes earlier in what it kept: cut there
    ("p</f>q</b>r", "p", "stop", "</f>"),
    # the server cut at </c>; nothing unsent before it: the server's cut stands (OpenAI names no stop)
    ("abc</c>def</e>", "abc", "stop", None),
    # no stop at all: untouched
    ("no stops here", "no stops here", "length", None),
])
def test_more_than_four_stops_first_four_sent_rest_cut_here(content, want, finish, said):
    requests: list[dict[str, Any]] = []
    with fake_openai(content, requests) as server:
        reply = chat(server.url, SIX)
    assert requests[0]["stop"] == SIX[:MAX_API_STOPS]
    assert reply["content"] == want and reply["finish_reason"] == finish
    assert reply.get("stop_reason") == said


def test_four_or_fewer_stops_go_as_they_are_and_no_limit_sends_all():
    requests: list[dict[str, Any]] = []
    with fake_openai("x</d>y", requests) as server:
        assert chat(server.url, SIX[:4])["content"] == "x"
        assert requests[-1]["stop"] == SIX[:4]
        with pytest.raises(Exception, match="400"):   # a server with OpenAI's limit refuses all six
            chat(server.url, SIX, max_stops=None)
        assert requests[-1]["stop"] == SIX
    with pytest.raises(ValueError, match="max_stops"):
        OpenAIPolicy("http://127.0.0.1:1", max_stops=-1)


def test_restore_puts_back_the_stop_cut_here():
    """ChatRunner puts the stop string back from the stop_reason a client-side cut reports."""
    reply = {"content": "call", "finish_reason": "stop", "stop_reason": "</e>"}
    assert ChatRunner._restore_stop(None, reply, SIX) == "call</e>"


# -- end to end: an XML env with six tools (six stops) through ChatRunner ------------------------------

def six_tool_env(**kwargs: Any):
    """A ToolEnv with five note tools and ``answer``: in the XML format, six closing-tag stops."""
    from forage.envs import Task, ToolEnv, answer_tool
    from forage.tools import tool

    def note_tool(i: int):
        def note(note: str) -> str:
            """Write a note."""
            return "noted"
        return tool(note, name=f"note{i}")

    return ToolEnv([Task("t0", "What is 2+2?", "4")], [note_tool(i) for i in range(5)] + [answer_tool()],
                   tool_format="xml", **kwargs)


@pytest.mark.parametrize("first", ["note4", "note0"])
def test_chat_runner_over_an_env_with_six_stops(first):
    """The model calls a tool, makes up its result and answers, all in one turn: the turn is cut after the call
    whether its stop was sent (note0) or not (note4), and the env answers only the call."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from forage.asgi_thread import ThreadedASGIServer

    env = six_tool_env()
    stops = list(env.stop_strings())
    assert len(stops) == 6 and stops[4] == "</note4>"
    call, answer = env.format_call(first, note="sum it"), env.format_call("answer", answer="4")
    turns = [f"{call}\nnoted: 2+2 is 4\n{answer}", answer]
    requests: list[dict[str, Any]] = []

    async def completions(request: Request) -> JSONResponse:
        body = await request.json()
        requests.append(body)
        if len(body.get("stop") or []) > 4:
            return JSONResponse({"error": {"message": "at most 4 stop sequences"}}, status_code=400)
        turn = sum(1 for m in body["messages"] if m["role"] == "assistant")
        text, _ = cut_at_stops(turns[min(turn, 1)], body.get("stop") or [])
        return JSONResponse({"choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": text}}]})

    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    with ThreadedASGIServer(app) as server:
        async def main():
            policy = OpenAIPolicy(server.url, model="stub", use_tools=False, retries=0)
            try:
                return await ChatRunner(policy).run(lambda: six_tool_env(), [0])
            finally:
                await policy.aclose()

        (t,) = asyncio.run(main())
    assert t.error is None, t.error
    assert all(r["stop"] == stops[:4] for r in requests)
    assert t.messages[2]["content"] == call                   # cut after the call, its stop put back
    assert [c["name"] for c in t.messages[3]["tool_calls"]] == [first] and not t.messages[3]["errors"]
    assert t.num_turns == 2 and t.terminated and t.answer == "4"
