"""MiniWoB-v0 in headless chromium: text DOM observations, click/type tools, the task's reward."""

from __future__ import annotations

import re

import gymnasium as gym
import pytest

import forage  # noqa: F401
from forage.sandboxes.web.miniwob import dom_text, miniwob_unavailable

_REASON = miniwob_unavailable()
if _REASON:
    print(f"skipping the MiniWoB episode tests: {_REASON}")
needs_chromium = pytest.mark.skipif(_REASON is not None, reason=f"MiniWoB cannot run: {_REASON}")


def test_dom_text_is_compact():
    elements = [
        {"ref": 1, "parent": None, "tag": "body", "text": "", "id": "", "classes": "", "value": None, "flags": [0]},
        {"ref": 2, "parent": 1, "tag": "div", "text": "", "id": "", "classes": "", "value": None, "flags": [0]},
        {"ref": 3, "parent": 2, "tag": "button", "text": "OK", "id": "b", "classes": "x y", "value": None, "flags": [0]},
        {"ref": 4, "parent": 2, "tag": "input_text", "text": "", "id": "", "classes": "", "value": "hi", "flags": [1]},
    ]
    text = dom_text("Click OK.", elements)
    assert text.splitlines()[0] == "Task: Click OK."
    assert '[3] button #b .x.y "OK"' in text and '[4] input_text value="hi" (focused)' in text
    assert "[1]" not in text and "[2]" not in text


@pytest.fixture(scope="module")
def login_env():
    env = gym.make("forage/MiniWoB-login-user-v0")
    yield env
    env.close()


@needs_chromium
def test_login_user_scripted_episode(login_env):
    base = login_env.unwrapped
    obs, info = login_env.reset(seed=0)
    user, pw = re.search(r'username "([^"]+)" and the password "([^"]+)"', obs).groups()
    ref = {k: int(re.search(rf"\[(\d+)\] input_\w+ #{k}", obs).group(1)) for k in ("username", "password")}
    login = int(re.search(r'\[(\d+)\] button[^\n]*"Login"', obs).group(1))
    call = base.format_call
    obs, reward, terminated, truncated, info = login_env.step(call("type", element_id=ref["username"], text=user))
    assert f'value="{user}"' in obs and not terminated
    login_env.step(base.format_call("type", element_id=ref["password"], text=pw))
    obs, reward, terminated, truncated, info = login_env.step(base.format_call("click", element_id=login))
    assert terminated and info["rewards"]["task"] == 1.0 and reward == pytest.approx(1.0)


@needs_chromium
def test_wrong_answers_and_hostile_input_are_observations(login_env):
    base = login_env.unwrapped
    first, info = login_env.reset(seed=1)
    obs, reward, terminated, truncated, info = login_env.step(base.format_call("click", element_id=9999))
    assert "no element [9999]" in obs and not terminated
    ref = int(re.search(r"\[(\d+)\] input_\w+ #username", first).group(1))
    obs, *_ = login_env.step(base.format_call("type", element_id=ref, text="🙂\ud800 ok\x00" * 50))
    assert "Error" not in obs.split("\n")[0]
    login = int(re.search(r'\[(\d+)\] button[^\n]*"Login"', obs).group(1))
    obs, reward, terminated, truncated, info = login_env.step(base.format_call("click", element_id=login))
    assert terminated and info["rewards"]["task"] < 1.0  # wrong credentials: the task's own failure reward


@needs_chromium
def test_family_switches_tasks_in_one_browser():
    env = gym.make("forage/MiniWoB-v0", miniwob_tasks=["click-button", "enter-text"])
    base = env.unwrapped
    obs, info = env.reset(options={"task_id": "click-button"})
    assert info["task_id"] == "click-button" and obs.startswith("Task: Click on the")
    label = re.search(r'Click on the "([^"]+)" button', obs).group(1)
    ref = int(re.search(rf'\[(\d+)\] button[^\n]*"{re.escape(label)}"', obs).group(1))
    obs, reward, terminated, truncated, info = env.step(base.format_call("click", element_id=ref))
    assert terminated and info["rewards"]["task"] == 1.0
    obs, info = env.reset(options={"task_id": "enter-text"})
    word = re.search(r'Enter "([^"]+)"', obs).group(1)
    field = int(re.search(r"\[(\d+)\] input_text", obs).group(1))
    submit = int(re.search(r'\[(\d+)\] button[^\n]*"Submit"', obs).group(1))
    env.step(base.format_call("type", element_id=field, text=word))
    obs, reward, terminated, truncated, info = env.step(base.format_call("click", element_id=submit))
    assert terminated and info["rewards"]["task"] == 1.0
    env.close()
