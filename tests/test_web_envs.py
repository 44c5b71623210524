"""WikiNav-v0 and WebQA-v0 on the real local site: shortest paths, scripted episodes, rewards."""

from __future__ import annotations

import json
import re
from collections import deque

import gymnasium as gym
import pytest
from _web_helpers import DISTANCES_FROM_VOLCANO, web_corpus, web_site  # noqa: F401

import forage  # noqa: F401
from forage.envs.web import WikiNavEnv, link_graph_distances, wikinav_tasks


def _bfs(links, source):
    dist = {source: 0}
    queue = deque([source])
    while queue:
        u = queue.popleft()
        for v in links[u]:
            if v not in dist:
                dist[v] = dist[u] + 1
                queue.append(v)
    return dist


@pytest.fixture()
def nav(web_corpus, web_site):
    env = WikiNavEnv(corpus=str(web_corpus), num_tasks=50, difficulties=(1, 2, 3, 4, 5))
    yield env
    env.close()


def test_link_graph_and_shortest_paths(nav):
    site = nav.site
    titles = [d.title for d in site.docs]
    volcano = titles.index("Volcano")
    dist, _ = link_graph_distances(site.links, [volcano])
    assert {titles[i]: int(d) for i, d in enumerate(dist[0])} == DISTANCES_FROM_VOLCANO
    for task in nav.tasks:  # each task: a real path of links, as short as a plain BFS says
        path = [titles.index(t) for t in task.metadata["shortest_path"]]
        assert all(b in site.links[a] for a, b in zip(path, path[1:]))
        assert len(path) - 1 == task.metadata["difficulty"] == _bfs(site.links, path[0])[path[-1]]
    assert {t.metadata["difficulty"] for t in nav.tasks} == {1, 2, 3, 4, 5}
    assert [t.id for t in wikinav_tasks(site, 20, seed=3)] == [t.id for t in wikinav_tasks(site, 20, seed=3)]


def _click_to(env, title):
    link = next(link for link in env.episode.state["browser"].page.links if link.url.endswith(f"/wiki/{title}"))
    return env.step(env.format_call("click", link_id=link.id))


def test_scripted_shortest_path_scores_full(nav):
    obs, info = nav.reset(seed=0, options={"difficulty": 5})
    assert info["difficulty"] == 5 and info["start"] == "Volcano" and info["target"] == "Bridge"
    assert "Page: Volcano" in obs and '"Bridge"' in obs
    for title in info["shortest_path"][1:]:
        obs, reward, terminated, truncated, info = _click_to(nav, title)
    assert terminated and not truncated and "You reached the target" in obs
    assert info["rewards"]["arrival"] == 1.0 and info["rewards"]["path_efficiency"] == 1.0
    assert reward == pytest.approx(1.0)


def test_detour_scores_less_and_only_article_links(nav):
    obs, info = nav.reset(seed=1, options={"difficulty": (2, 2)})
    assert info["difficulty"] == 2
    page = nav.episode.state["browser"].page
    home = next(link for link in page.links if link.text == "Home")
    obs, reward, terminated, truncated, info = nav.step(nav.format_call("click", link_id=home.id))
    assert "outside the pages this task allows" in obs and not terminated
    first = nav.episode.state["browser"].page.links
    wrong = [link for link in first if "/wiki/" in link.url and not link.url.endswith(
        "/wiki/" + nav.episode.task.metadata["shortest_path"][1])]
    if wrong:  # a detour: one wrong click and back
        nav.step(nav.format_call("click", link_id=wrong[0].id))
        nav.step(nav.format_call("back"))
    for title in nav.episode.task.metadata["shortest_path"][1:]:
        obs, reward, terminated, truncated, info = _click_to(nav, title)
    assert terminated and info["rewards"]["arrival"] == 1.0
    assert info["rewards"]["path_efficiency"] == (pytest.approx(2 / 4) if wrong else 1.0)
    with pytest.raises(ValueError, match="no task has difficulty"):
        nav.reset(options={"difficulty": 9})


def test_wikinav_unreached_target_scores_zero(web_corpus, web_site):
    env = WikiNavEnv(corpus=str(web_corpus), num_tasks=10, max_turns=2)
    env.reset(seed=0)
    env.step(env.format_call("scroll", direction="down"))
    obs, reward, terminated, truncated, info = env.step(env.format_call("find", text="zzz"))
    assert truncated and not terminated
    assert info["rewards"]["arrival"] == 0.0 and info["rewards"]["path_efficiency"] == 0.0
    env.close()


def _scripted_browsing_agent(env, obs):
    """Search the question's keywords, open the top result, answer with that article's title."""
    call = env.unwrapped.format_call
    question = re.search(r"\"(.+?)\"", obs)
    words = [w for w in re.findall(r"[A-Za-z]+", question.group(1) if question else obs) if len(w) > 3][:6]
    obs, *_ = env.step(call("search", query=" ".join(words)))
    top = re.search(r"- \[(\d+): ([^\]]+)\]", obs)
    obs, *_ = env.step(call("click", link_id=int(top.group(1))))
    title = re.search(r"Page: (.+?) - ", obs).group(1)
    return env.step(call("answer", answer=title))


def test_webqa_scripted_agent_answers_correctly(web_corpus, web_site, tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps(r) for r in [
        {"id": "q1", "question": "Which subject is this: \"a dark fine-grained igneous rock rich in magnesium\"?",
         "answers": ["Basalt"]},
        {"id": "q2", "question": "Which subject is this: \"a persistent body of dense ice that moves slowly\"?",
         "answers": ["Glacier", "glaciers"]},
    ]) + "\n")
    env = gym.make("forage/WebQA-v0", corpus=str(web_corpus), qa_file=str(qa))
    for tid in ("q1", "q2"):
        obs, info = env.reset(seed=0, options={"task_id": tid})
        assert web_site.url in obs and {t["function"]["name"] for t in info["tools"]} >= {"search", "click", "answer"}
        obs, reward, terminated, truncated, info = _scripted_browsing_agent(env, obs)
        assert terminated and info["rewards"]["exact_match"] == 1.0 and info["rewards"]["tool_use"] == 1.0
        assert reward == pytest.approx(1.1)
    env.close()


def test_webqa_default_corpus_uses_searchqa_tasks():
    from forage.envs.search import searchqa_tasks

    env = gym.make("forage/WebQA-v0", num_tasks=20)
    base = env.unwrapped
    assert [t.id for t in base.tasks] == [t.id for t in searchqa_tasks(num_tasks=20)]
    obs, info = env.reset(seed=2)
    answer = base.oracle_answer(base.episode.task)
    obs, *_ = env.step(base.format_call("search", query=answer))
    link = re.search(r"- \[(\d+): " + re.escape(answer) + r"\]", obs)
    assert link, obs
    obs, *_ = env.step(base.format_call("click", link_id=int(link.group(1))))
    assert f"Page: {answer} - " in obs
    obs, reward, terminated, truncated, info = env.step(base.format_call("answer", answer=answer))
    assert terminated and info["rewards"]["exact_match"] == 1.0
    obs, reward, terminated, truncated, info = env.step("no call")  # after the end: still a clean answer
    env.reset(seed=3)
    obs, reward, terminated, truncated, info = env.step(base.format_call("answer", answer="certainly wrong"))
    assert info["rewards"]["exact_match"] == 0.0 and info["rewards"]["tool_use"] == 0.0
    env.close()
