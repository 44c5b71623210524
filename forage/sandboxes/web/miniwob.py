"""MiniWoB++ tasks in headless Debian chromium (the ``miniwob`` package), seen as compact text DOMs.

One :class:`MiniWoBSession` holds one chromium (through chromedriver) and switches between task
pages without restarting it. The task's 10-second episode timer is raised (``episode_seconds``)
because a language model takes longer than that per turn; the task's own reward is unchanged.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

__all__ = ["chromium_paths", "miniwob_unavailable", "MiniWoBSession", "MiniWoBConfig", "dom_text", "ActionOutcome"]

_INTERACTIVE = ("input", "button", "a", "select", "option", "textarea", "label")


def chromium_paths() -> tuple[str, str] | None:
    """(chromium binary, chromedriver) from ``MINIWOB_CHROME_BINARY``/``MINIWOB_CHROMEDRIVER`` or Debian's packages."""
    binary, driver = os.environ.get("MINIWOB_CHROME_BINARY"), os.environ.get("MINIWOB_CHROMEDRIVER")
    if binary or driver:  # set explicitly: use them, or nothing
        return (binary, driver) if binary and driver and os.path.exists(binary) and os.path.exists(driver) else None
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium"), shutil.which("chromium-browser"),
                      shutil.which("google-chrome")):
        if candidate and os.path.exists(candidate):
            binary = candidate
            break
    driver = shutil.which("chromedriver")
    if driver is None and os.path.exists("/usr/bin/chromedriver"):
        driver = "/usr/bin/chromedriver"
    return (binary, driver) if binary and driver else None


def miniwob_unavailable() -> str | None:
    """Why MiniWoB cannot run here (a missing package, chromium or chromedriver), or None when it can."""
    try:
        import miniwob  # noqa: F401
        import selenium  # noqa: F401
    except ImportError as e:
        return f"the miniwob/selenium packages are missing ({e}); pip install 'forage-gym[web]'"
    if chromium_paths() is None:
        if os.environ.get("MINIWOB_CHROME_BINARY") or os.environ.get("MINIWOB_CHROMEDRIVER"):
            return "MINIWOB_CHROME_BINARY and MINIWOB_CHROMEDRIVER must both name existing files"
        return "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
    return None


@dataclass
class MiniWoBConfig:
    """Chromium session knobs: the episode timer, how many DOM elements an observation lists, text limits."""

    episode_seconds: float = 600.0
    max_elements: int = 150
    max_text_chars: int = 80
    max_type_chars: int = 200


@dataclass
class ActionOutcome:
    """What an action did: the episode's done flag, the task's reward and reason, and the new view."""

    done: bool
    reward: float
    reason: Any
    view: str


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def dom_text(utterance: str, elements: list[dict[str, Any]], max_elements: int = 150, max_text_chars: int = 80) -> str:
    """The task instruction and the DOM as indented lines ``[ref] tag #id .class "text" value=...``.

    Elements without text, id or an interactive tag are dropped (their children are kept, one
    level up), so the view stays small; ``ref`` is the id that ``click``/``type`` take.
    """
    by_ref = {int(e["ref"]): e for e in elements}

    def keep(e: dict[str, Any]) -> bool:
        tag = str(e.get("tag", ""))
        return bool(str(e.get("text") or "").strip() or e.get("id") or tag.split("_")[0] in _INTERACTIVE)

    depth: dict[int, int] = {}
    lines = []
    for e in elements:
        ref = int(e["ref"])
        parent = e.get("parent")
        d = 0
        while parent is not None and int(parent) in by_ref:
            if int(parent) in depth and keep(by_ref[int(parent)]):
                d = depth[int(parent)] + 1
                break
            parent = by_ref[int(parent)].get("parent")
        depth[ref] = d
        if not keep(e):
            depth[ref] = d - 1 if d > 0 else 0
            continue
        parts = [f"[{ref}] {e.get('tag', '?')}"]
        if e.get("id"):
            parts.append(f"#{e['id']}")
        classes = str(e.get("classes") or "").strip()
        if classes:
            parts.append("." + ".".join(classes.split()[:3]))
        text = str(e.get("text") or "").strip()
        if text:
            parts.append(f'"{_clip(text, max_text_chars)}"')
        value = e.get("value")
        if value not in (None, "", False):
            parts.append(f'value="{_clip(value, max_text_chars)}"')
        flags = e.get("flags")
        if flags is not None and len(flags) > 0 and int(flags[0]):
            parts.append("(focused)")
        lines.append("  " * d + " ".join(parts))
        if len(lines) >= max_elements:
            lines.append(f"... ({len(elements) - len(lines)} more elements not shown)")
            break
    return f"Task: {utterance}\nPage elements (click/type take the number in brackets):\n" + "\n".join(lines)


class MiniWoBSession:
    """One headless chromium running MiniWoB++ task pages; ``reset``, ``click``, ``type``, ``close``."""

    def __init__(self, config: MiniWoBConfig | None = None) -> None:
        self.config = config or MiniWoBConfig()
        self.env: Any = None
        self.task: str | None = None
        self.done = False
        self._refs: set[int] = set()

    def _start(self, task: str) -> None:
        reason = miniwob_unavailable()
        if reason is not None:
            raise RuntimeError(f"MiniWoB cannot run: {reason}")
        binary, driver = chromium_paths()  # type: ignore[misc]
        os.environ["MINIWOB_CHROME_BINARY"], os.environ["MINIWOB_CHROMEDRIVER"] = binary, driver
        os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download a driver
        logging.getLogger("selenium").setLevel(logging.WARNING)
        from miniwob.environment import MiniWoBEnvironment

        self.env = MiniWoBEnvironment(subdomain=task)
        self.task = task

    def _switch(self, task: str) -> None:
        from miniwob.fields import get_field_extractor
        from miniwob.selenium_instance import DEFAULT_BASE_URL
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as EC
        from selenium.webdriver.support.wait import WebDriverWait

        inst = self.env.instance
        inst.url = urljoin(DEFAULT_BASE_URL, f"{task}.html")
        inst.field_extractor = get_field_extractor(task)
        self.env.subdomain = task
        inst.driver.get(inst.url)
        WebDriverWait(inst.driver, 10).until(EC.element_to_be_clickable((By.ID, inst.SYNC_SCREEN_ID)))
        self.task = task

    def reset(self, task: str, seed: int | None = None) -> str:
        """Start an episode of ``task`` (e.g. ``"click-button"``) and return its text view."""
        if task.startswith("flight.") or "/" in task or task.startswith("."):
            raise ValueError(f"unsupported MiniWoB task {task!r}")
        if self.env is None or self.env.instance is None or self.env.instance.died:
            self.close()
            self._start(task)
        elif task != self.task:
            self._switch(task)
        self.env.instance.driver.execute_script(f"core.EPISODE_MAX_TIME = {int(self.config.episode_seconds * 1000)};")
        obs, _ = self.env.reset(seed=seed, options={"record_screenshots": False})
        self.done = False
        return self._view(obs)

    def _view(self, obs: dict[str, Any]) -> str:
        elements = list(obs.get("dom_elements") or [])
        self._refs = {int(e["ref"]) for e in elements}
        return dom_text(str(obs.get("utterance", "")), elements, self.config.max_elements, self.config.max_text_chars)

    def _act(self, action: Any) -> ActionOutcome:
        obs, reward, done, _, info = self.env.step(action)
        self.done = bool(done)
        if done:
            raw = float(info.get("raw_reward", reward))
            why = f" ({info['reason']})" if info.get("reason") else ""
            return ActionOutcome(True, raw, info.get("reason"), f"The task is over: reward {raw:g}{why}.")
        return ActionOutcome(False, 0.0, None, self._view(obs))

    def _check(self, ref: int) -> None:
        if self.env is None:
            raise LookupError("no MiniWoB episode is running")
        if self.done:
            raise LookupError("the task is over")
        if int(ref) not in self._refs:
            raise LookupError(f"there is no element [{ref}] on the page")

    def click(self, ref: int) -> ActionOutcome:
        """Click element ``ref``."""
        self._check(ref)
        return self._act(self.env.create_action("CLICK_ELEMENT", ref=int(ref)))

    def type(self, ref: int, text: str) -> ActionOutcome:
        """Focus element ``ref`` (by clicking it) and type ``text``."""
        self._check(ref)
        clean = str(text).encode("utf-8", "replace").decode("utf-8")[: self.config.max_type_chars]
        # chromedriver types only printable characters of the Basic Multilingual Plane
        clean = "".join(c for c in clean if (c.isprintable() or c == " ") and ord(c) < 0x10000)
        return self._act(self.env.create_action("FOCUS_ELEMENT_AND_TYPE_TEXT", ref=int(ref), text=clean))

    def close(self) -> None:
        """Quit chromium."""
        if self.env is not None:
            try:
                self.env.close()
            except Exception:
                pass
            self.env = None
