"""SearchQA-v0 and FanOutQA-v0: generated tasks, tools, rewards, bad input, service down mid-episode."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import forage  # noqa: F401  (registers the envs)
from _retrieval_helpers import default_retriever, live_service, tiny_corpus, tiny_index  # noqa: F401
from forage.envs.search import FanOutQAEnv, SearchQAEnv
from forage.envs.rewards import normalize_answer
from forage.envs.search_tasks import first_sentence, mask_title, sample_tasks
from forage.sandboxes.retrieval.backends import InProcessBackend


@pytest.fixture(scope="module")
def env(default_retriever):
    e = gym.make("forage/SearchQA-v0", num_tasks=200).unwrapped
    yield e
    e.close()


def test_masking_hides_the_answer():
    s = first_sentence("The Eiffel Tower (French: tour Eiffel) is a wrought-iron lattice tower in Paris. It was built in 1889.")
    assert s == "The Eiffel Tower is a wrought-iron lattice tower in Paris."
    assert mask_title(s, "Eiffel Tower") == "The ___ is a wrought-iron lattice ___ in Paris."
    assert mask_title("Mercury is the smallest planet.", "Mercury (planet)") == "___ is the smallest planet."


def test_default_tasks_are_mixed_checkable_and_seeded(env):
    tasks = env.tasks
    assert len(tasks) == 200
    hops = [t.metadata["hops"] for t in tasks]
    assert hops.count(1) == 100 and hops.count(2) == 100
    titles = {d.title for d in env.backend.retriever.docs}
    for t in tasks:
        assert t.answer[0] in titles
        assert f" {normalize_answer(t.answer[-1])} " not in f" {normalize_answer(t.prompt)} "  # no leak
    again = SearchQAEnv(num_tasks=200, backend=env.backend)
    assert [t.id for t in again.tasks] == [t.id for t in tasks]
    other = SearchQAEnv(num_tasks=200, task_seed=1, backend=env.backend)
    assert [t.id for t in other.tasks] != [t.id for t in tasks]


def test_generated_questions_are_answerable_by_search(env, default_retriever):
    """The gold article is retrievable from the question text (dense, top 5): the tasks are answerable."""
    one = [t for t in env.tasks if t.metadata["hops"] == 1][:40]
    queries = [t.prompt.split('"')[1].replace("___", " ") for t in one]
    rows = default_retriever.search(queries, 5)
    found = sum(t.metadata["doc_ids"][0] in [h.id for h in row] for t, row in zip(one, rows))
    assert found >= 28, f"only {found}/40 single-hop gold articles in the top 5"
    two = [t for t in env.tasks if t.metadata["hops"] == 2][:40]
    clues = [t.prompt.split('"')[1].replace("___", " ") for t in two]
    rows = default_retriever.search(clues, 5)
    found = sum(t.metadata["doc_ids"][0] in [h.id for h in row] for t, row in zip(two, rows))
    assert found >= 24, f"only {found}/40 bridge entities in the top 5"


def test_oracle_episode_scores_full_marks(env):
    obs, info = env.reset(seed=3)
    task = env.episode.task
    assert task.prompt in obs and [t["function"]["name"] for t in info["tools"]] == ["search", "answer"]
    obs, r, term, trunc, info = env.step(env.format_call("search", query=task.prompt.split('"')[1], k=3))
    assert "Doc 1 (Title:" in obs and not term and info["rewards"]["format"] == 0.0
    obs, r, term, trunc, info = env.step(env.format_call("answer", answer=env.oracle_answer(task)))
    assert term and not trunc
    assert info["rewards"] == {"format": 0.0, "exact_match": 1.0, "f1": 1.0, "tool_use": 1.0}
    assert r == pytest.approx(1.1)


def test_wrong_answer_without_search(env):
    env.reset(seed=4)
    obs, r, term, trunc, info = env.step(env.format_call("answer", answer="certainly not this"))
    assert term and info["rewards"]["exact_match"] == 0.0 and info["rewards"]["tool_use"] == 0.0 and r == 0.0


@pytest.mark.parametrize("args,fragment", [({"query": ""}, "query is empty"), ({"query": "   "}, "query is empty"),
                                           ({"query": "x", "k": 0}, "minimum"), ({"query": "x", "k": 1000}, "maximum"),
                                           ({"query": "x", "k": "3"}, "integer"), ({"k": 2}, "query")])
def test_bad_search_calls_are_error_observations(env, args, fragment):
    env.reset(seed=5)
    obs, r, term, trunc, info = env.step(env.format_call("search", **args))
    assert fragment in obs and "Error" in obs and not term and not trunc
    obs, r, term, trunc, info = env.step(env.format_call("search", query="planet", k=2))
    assert "Doc 2" in obs  # the episode goes on


def test_odd_queries_in_the_env(env):
    env.reset(seed=6)
    for q in ["a" * 100_000, "\ud800\udfff?", "nul\x00", "🙂🙂🙂"]:
        obs, r, term, trunc, info = env.step(env.format_call("search", query=q, k=1))
        assert not term and ("Doc 1" in obs or "Error" in obs)
        if trunc:
            env.reset(seed=6)


def test_service_down_mid_episode_becomes_an_error_observation(live_service, default_retriever):
    env = SearchQAEnv(backend=live_service.url, num_tasks=10)
    env.reset(seed=0)
    obs, *_ = env.step(env.format_call("search", query="capital of France", k=2))
    assert "Paris" in obs
    live_service.stop()
    obs, r, term, trunc, info = env.step(env.format_call("search", query="capital of France", k=2))
    assert "search is unavailable" in obs and "unreachable" in obs and not term and not trunc
    obs, r, term, trunc, info = env.step(env.format_call("answer", answer=env.oracle_answer(env.episode.task)))
    assert term and info["rewards"]["exact_match"] == 1.0
    env.close()


def test_user_qa_file_and_corpus(tiny_corpus, tiny_index, tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "Which bird cannot fly?", "answers": ["Penguin", "penguins"]}) + "\n"
                  + json.dumps({"id": "q2", "question": "What has rings?", "answer": "Saturn"}) + "\n")
    env = SearchQAEnv(qa_file=str(qa), index=str(tiny_index), method="hybrid")
    assert [t.id for t in env.tasks] == ["qa-1", "q2"]
    env.reset(options={"task_id": "qa-1"})
    obs, *_ = env.step(env.format_call("search", query="flightless bird", k=1))
    assert "Penguin" in obs
    *_, info = env.step(env.format_call("answer", answer="Penguins"))
    assert info["rewards"]["exact_match"] == 1.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "no answers"}) + "\n")
    with pytest.raises(ValueError, match="answers"):
        SearchQAEnv(qa_file=str(bad), index=str(tiny_index))
    # questions generated from a user corpus
    env2 = SearchQAEnv(corpus=str(tiny_corpus), index=str(tiny_index), num_tasks=None, hops=1)
    assert {t.answer[0] for t in env2.tasks} <= {"Volcano", "Glacier", "Violin", "Bread", "Saturn", "Chess", "Penguin", "Copper"}
    assert len(env2.tasks) >= 4


def test_sample_tasks_respects_fraction(env):
    from forage.envs.search_tasks import cached_corpus_tasks
    from forage.sandboxes.retrieval import default_corpus

    all_tasks = cached_corpus_tasks(default_corpus())
    assert sum(t.metadata["hops"] == 1 for t in all_tasks) == 9310
    assert sum(t.metadata["hops"] == 2 for t in all_tasks) > 3000
    picked = sample_tasks(all_tasks, 100, seed=0, multi_hop_fraction=0.2)
    assert sum(t.metadata["hops"] == 2 for t in picked) == 20 and len({t.id for t in picked}) == 100


def test_fanoutqa_tasks_coverage_and_scoring(default_retriever):
    env = gym.make("forage/FanOutQA-v0", backend=InProcessBackend(default_retriever)).unwrapped
    assert len(env.tasks) == 310
    assert sum(t.metadata["coverage"] == 1.0 for t in env.tasks) == 8
    assert sum(t.metadata["coverage"] > 0 for t in env.tasks) == 161
    covered = FanOutQAEnv(backend=env.backend, min_coverage=1.0)
    assert len(covered.tasks) == 8
    env.reset(options={"task_index": 0})
    task = env.episode.task
    obs, *_ = env.step(env.format_call("search", query=task.prompt, k=3))
    assert "Doc 1" in obs
    raw = task.metadata["answer_raw"]  # FanOutQA's accuracy wants a dict answer's keys as well as its values
    full = "; ".join(f"{k}: {v}" for k, v in raw.items()) if isinstance(raw, dict) else "; ".join(task.answer)
    *_, info = env.step(env.format_call("answer", answer=full))
    assert info["rewards"]["answer_recall"] == 1.0 and info["rewards"]["exact_match"] == 1.0
    env.reset(options={"task_index": 0})
    *_, info = env.step(env.format_call("answer", answer=task.answer[0]))
    assert 0 < info["rewards"]["answer_recall"] < 1.0 and info["rewards"]["exact_match"] == 0.0
    with pytest.raises(ValueError, match="coverage"):
        FanOutQAEnv(backend=env.backend, min_coverage=1.01)


def test_env_docstrings_have_the_sections():
    for cls in (SearchQAEnv, FanOutQAEnv):
        for section in ("Description", "Action Space", "Observation Space", "Rewards", "Starting State",
                        "Episode End", "Arguments"):
            assert f"{section}:" in cls.__doc__
