"""FanOutQA-v0's score against the benchmark's own string-accuracy code, on answers made from the 310 dev questions.

Oracle: ``fanoutqa/eval/string.py`` and ``fanoutqa/norm.py`` from the installed ``fanoutqa`` package,
loaded by path (the package's ``__init__`` imports its Wikipedia client and ``fanoutqa.eval``'s
imports ROUGE/BLEURT/an LLM client, none needed here). The benchmark lemmatises with spaCy's
``en_core_web_sm``; where that model is not installed both sides get the same spaCy pipeline, so
this checks everything else (structure walk, dict keys, number commas, ftfy, punctuation, word
boundaries, scoring). Hand-worked cases check the two bugs issue 16 found in the old score.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

from forage.envs.grading import fanoutqa as ours


@pytest.fixture(scope="module")
def official():
    """The benchmark's ``answer_in_text`` (string.py + norm.py), imported without the package's heavy parts."""
    spec = importlib.util.find_spec("fanoutqa")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("fanoutqa is not installed")
    root = Path(spec.submodule_search_locations[0])
    saved = {k: v for k, v in sys.modules.items() if k == "fanoutqa" or k.startswith("fanoutqa.")}
    for name, path in (("fanoutqa", root), ("fanoutqa.eval", root / "eval")):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(path)]
        sys.modules[name] = pkg
    try:
        norm = importlib.import_module("fanoutqa.norm")
        string = importlib.import_module("fanoutqa.eval.string")
        try:
            import spacy

            spacy.load("en_core_web_sm")
            print("official normalisation with en_core_web_sm")
        except Exception as e:  # the model is not on PyPI: give both sides the same pipeline
            print(f"en_core_web_sm unavailable ({type(e).__name__}); both sides use: {ours.pipeline_name()}")
            nlp, _ = ours._load()
            norm.nlp = nlp
        yield string.answer_in_text
    finally:
        for k in [k for k in sys.modules if k == "fanoutqa" or k.startswith("fanoutqa.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def _questions() -> list[dict]:
    from forage.assets import fanoutqa_dev

    return json.loads(Path(fanoutqa_dev()).read_text(encoding="utf-8"))


def _leaves(ans) -> list[str]:
    if isinstance(ans, dict):
        return [str(k) for k in ans] + [s for v in ans.values() for s in _leaves(v)]
    if isinstance(ans, list):
        return [s for v in ans for s in _leaves(v)]
    return ["yes" if ans is True else "no" if ans is False else str(ans)]


def _with_commas(s: str) -> str:
    return f"{int(s):,}" if s.isdigit() and len(s) > 3 else s


def candidates(answer) -> list[str]:
    """Answers of every quality for one reference: full, partial, values without keys, reformatted, wrong."""
    leaves = _leaves(answer)
    values = _leaves(list(answer.values())) if isinstance(answer, dict) else leaves
    out = [", ".join(leaves), " ".join(values), "\n".join(f"- {x}" for x in leaves), leaves[0],
           ", ".join(leaves[:-1]), " and ".join(_with_commas(x) for x in leaves), " ".join(leaves).upper(),
           f"The answer is {leaves[-1]}.", " ".join(x + "s" for x in leaves), "", "I could not find it.",
           " ".join(x.replace(",", "") for x in leaves)]
    return list(dict.fromkeys(out))


def test_agrees_with_the_official_string_accuracy_on_every_dev_question(official):
    rows = [(q, c) for q in _questions() for c in candidates(q["answer"])]
    assert len(rows) > 2000
    disagree = []
    for q, cand in rows:
        ref = official(q["answer"], cand)
        got = ours.answer_in_text(q["answer"], cand)
        if (float(ref.score), bool(ref.found), list(ref.missing)) != (got.score, got.found, got.missing):
            disagree.append((q["id"], cand[:80], ref, got))
    print(f"{len(rows) - len(disagree)}/{len(rows)} answers score the same as fanoutqa.eval")
    assert disagree == [], disagree[:5]


def test_the_env_reward_is_the_official_loose_and_strict_accuracy(official):
    from forage.envs.base import Episode
    from forage.envs.search import FanOutQAEnv, fanoutqa_tasks

    import numpy as np

    tasks = fanoutqa_tasks()[:40]
    env = FanOutQAEnv.__new__(FanOutQAEnv)  # score() needs no backend or corpus
    for task in tasks:
        for cand in candidates(task.metadata["answer_raw"])[:4]:
            ep = Episode(task=task, env=env, rng=np.random.default_rng(0), answer=cand)
            scores = env.score(ep)
            ref = official(task.metadata["answer_raw"], cand)
            assert scores["answer_recall"] == pytest.approx(float(ref.score))
            assert scores["exact_match"] == float(ref.found)


@pytest.mark.parametrize("reference, answer, loose, strict", [
    # a dict answer: keys count as much as values, and a value said once covers each key it answers
    ({"Player1": "Left", "Player2": "Right", "Player3": "Left"}, "Left Right", 0.5, False),
    ({"Player1": "Left", "Player2": "Right"}, "Player1: left; Player2: right", 1.0, True),
    (["680000"], "about 680,000 people", 1.0, True), ("680,000", "680000", 1.0, True),
    (["5", "12"], "15 and 120", 0.0, False),  # word boundaries: 5 is not in 15
    (True, "Yes, it was.", 1.0, True), (False, "yes", 0.0, False), ([1, 2, 3, 4], "1 3", 0.5, False),
])
def test_hand_worked_scores(reference, answer, loose, strict):
    acc = ours.answer_in_text(reference, answer)
    assert acc.score == pytest.approx(loose) and acc.found is strict
