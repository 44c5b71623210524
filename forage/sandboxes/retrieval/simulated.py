"""A simulated search engine (the ZeroSearch idea): an LLM writes the documents, some deliberately noisy.

As in ZeroSearch's code (``llm_agent/generation.py``), each *query* draws once whether its results
are useful or noisy (plausible but unhelpful or misleading): all its documents are of that kind.
The noise probability follows a :class:`NoiseCurriculum` of the trainer's step, which reaches the
backend through ``set_step`` (the search envs call it on ``reset(options={"train_step": step})``),
so the policy first learns to use the tool on useful results and later copes with a messy engine.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import re
from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence, Union

import numpy as np

from .retriever import MAX_K, Hit

__all__ = ["NoiseCurriculum", "SimulatedSearchBackend", "TextGenerator", "openai_completions_generator",
           "hf_text_generator", "USEFUL_PROMPT", "NOISY_PROMPT"]

TextGenerator = Callable[[list[str]], Union[list[str], Awaitable[list[str]]]]

USEFUL_PROMPT = (
    "You are a web search engine. Write one short encyclopedia-style document (2-4 sentences) that "
    "directly helps answer the search query. Start with a title line.\n"
    "{hint}Query: {query}\nDocument:\n"
)
NOISY_PROMPT = (
    "You are a web search engine that returns low-quality results. Write one short document (2-4 "
    "sentences) that looks related to the search query but does not answer it, or gets a detail wrong. "
    "Start with a title line.\nQuery: {query}\nDocument:\n"
)


@dataclass
class NoiseCurriculum:
    """p_noise(step) rising from ``start`` to ``end`` over ``steps`` (exponential shape with base ``base``).

    ZeroSearch's ``dynamic_threshold``: start + (base^(t/T) - 1)/(base - 1)·(end - start) with
    t the trainer's step and T (``steps``) the run's total steps (ZeroSearch's
    ``total_training_steps``), base 4. ``base`` > 1 keeps the noise low for longer, then raises it
    quickly; ``base`` = 1 is linear.
    """

    start: float = 0.0
    end: float = 0.5
    steps: int = 1000
    base: float = 4.0

    def __call__(self, step: int) -> float:
        """The noise probability at training step ``step``."""
        frac = min(max(step / max(self.steps, 1), 0.0), 1.0)
        shaped = frac if abs(self.base - 1.0) < 1e-9 else (self.base ** frac - 1.0) / (self.base - 1.0)
        return float(self.start + (self.end - self.start) * shaped)


class SimulatedSearchBackend:
    """A search backend whose ``k`` documents per query are written by an LLM (``generate``).

    ``generate`` maps a list of prompts to a list of completions (sync or async). With
    probability ``p_noise`` (fixed, or from ``curriculum`` at the trainer's step given to
    :meth:`set_step`) a query's documents are all written with :data:`NOISY_PROMPT`, else all
    with :data:`USEFUL_PROMPT` (one draw per query, as ZeroSearch does); each hit records its kind
    in ``Hit.id`` (``sim-useful-…`` / ``sim-noisy-…``). ``answer_hints`` maps a query to a
    reference answer that the useful prompt may mention (ZeroSearch gives the simulator the gold answer).
    """

    def __init__(self, generate: TextGenerator, *, p_noise: float = 0.0, curriculum: NoiseCurriculum | None = None,
                 seed: int = 0, max_doc_chars: int = 800, answer_hints: dict[str, str] | None = None) -> None:
        self.generate = generate
        self.p_noise = p_noise
        self.curriculum = curriculum
        self.step = 0
        self.rng = np.random.default_rng(seed)
        self.max_doc_chars = max_doc_chars
        self.answer_hints = answer_hints or {}
        self.stats = {"useful": 0, "noisy": 0, "failed": 0}

    def set_step(self, step: int) -> float:
        """Put the curriculum at the trainer's ``step``; returns the noise probability now in force."""
        self.step = max(0, int(step))
        return self.noise_probability()

    def noise_probability(self) -> float:
        """The current probability that a document is noisy."""
        return self.curriculum(self.step) if self.curriculum is not None else self.p_noise

    async def asearch(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        """``k`` generated documents per query."""
        k = max(1, min(int(k), MAX_K))
        p = self.noise_probability()
        prompts, kinds = [], []
        for q in queries:
            q = str(q).encode("utf-8", "replace").decode("utf-8")[:2000]
            noisy = bool(self.rng.random() < p)   # one draw per query (ZeroSearch), not per document
            hint = self.answer_hints.get(q)
            hint_line = f"(The correct answer is: {hint})\n" if hint and not noisy else ""
            for _ in range(k):
                kinds.append("noisy" if noisy else "useful")
                prompts.append((NOISY_PROMPT if noisy else USEFUL_PROMPT).format(query=q, hint=hint_line))
        out = self.generate(prompts)
        if inspect.isawaitable(out):
            out = await out
        texts = list(out)
        if len(texts) != len(prompts):
            raise RuntimeError(f"the simulator returned {len(texts)} documents for {len(prompts)} prompts")
        results, i = [], 0
        for qi in range(len(queries)):
            hits = []
            for j in range(k):
                title, text = _split_doc(texts[i], self.max_doc_chars)
                self.stats[kinds[i]] += 1
                hits.append(Hit(f"sim-{kinds[i]}-{qi}-{j}", title, text, float(k - j)))
                i += 1
            results.append(hits)
        return results


def _split_doc(raw: str, max_chars: int) -> tuple[str, str]:
    lines = [ln.strip() for ln in str(raw).strip().splitlines() if ln.strip()]
    if not lines:
        return "(empty)", ""
    title = re.sub(r"^(title:|#+)\s*", "", lines[0], flags=re.I)[:120]
    text = " ".join(lines[1:]) or lines[0]
    return title, text[:max_chars]


def openai_completions_generator(url: str, model: str, max_tokens: int = 128, temperature: float = 0.7,
                                 timeout: float = 60.0) -> TextGenerator:
    """A generator that calls an OpenAI-compatible ``/v1/completions`` server (e.g. vLLM) with all prompts at once."""
    import httpx

    base = url.rstrip("/")

    async def generate(prompts: list[str]) -> list[str]:
        async with httpx.AsyncClient(timeout=timeout) as client:
            resp = await client.post(f"{base}/v1/completions", json={"model": model, "prompt": prompts,
                                                                     "max_tokens": max_tokens, "temperature": temperature})
            resp.raise_for_status()
            choices = sorted(resp.json()["choices"], key=lambda c: c["index"])
            return [c["text"] for c in choices]

    return generate


def hf_text_generator(path: str, max_new_tokens: int = 64, temperature: float = 0.7, seed: int = 0) -> TextGenerator:
    """A generator running a local HF causal LM (e.g. the prepared SmolLM2) with transformers, batched."""
    import threading

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    lock = threading.Lock()
    gen = torch.Generator().manual_seed(seed)

    def run(prompts: list[str]) -> list[str]:
        with lock, torch.no_grad():
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            enc = tok(prompts, return_tensors="pt", padding=True, truncation=True, max_length=512)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                                 temperature=max(temperature, 1e-5), pad_token_id=tok.pad_token_id)
            return tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    async def generate(prompts: list[str]) -> list[str]:
        return await asyncio.to_thread(run, prompts)

    return generate
