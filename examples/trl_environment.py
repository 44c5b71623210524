"""Train with TRL's GRPOTrainer on a Forage env through TRL's own ``environment_factory`` (TRL >= 1.16).

``forage.integrations.trl.environment_class(env_id)`` is a class whose public methods are the env's
tools (typed signatures and docstrings, so TRL renders their schemas), with ``reset`` (the row's
task prompt) and ``get_reward`` (the episode's Forage reward). TRL runs the tool-calling loop itself:
it parses the model's ``<tool_call>`` blocks with the tokenizer's response template, calls the
methods, and masks the tool results out of the loss.

SmolLM2's chat template ignores tools, so the example gives the tokenizer Forage's Hermes ChatML
template (the one ``forage serve policy`` gives vLLM) and TRL's Qwen response template, which reads
the same ``<tool_call>`` JSON blocks.

    python examples/trl_environment.py --steps 20        # SmolLM2-135M (from `forage model prepare`)
"""

from __future__ import annotations

import argparse
import os
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def tool_calling_tokenizer(tokenizer: Any) -> Any:
    """Give a ChatML tokenizer whose template ignores tools a Hermes tool template and TRL's matching parser."""
    from trl.chat_template_utils import qwen3_template

    from forage.agents.vllm_server import HERMES_CHATML_TEMPLATE

    if "tools" not in (tokenizer.chat_template or ""):
        tokenizer.chat_template = HERMES_CHATML_TEMPLATE
        tokenizer.response_template = qwen3_template
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_trainer(model: Any, tokenizer: Any, env_id: str = "forage/LookupQA-1hop-v0", *, steps: int = 20,
                  num_tasks: int = 64, num_generations: int = 4, batch_size: int = 4, learning_rate: float = 1e-5,
                  max_completion_length: int = 256, output_dir: str = "runs/trl-env", extra_reward_funcs: list | None = None,
                  env_kwargs: dict[str, Any] | None = None, dataset: Any = None, **config: Any):
    """A GRPOTrainer whose rollouts call ``env_id``'s tools through ``environment_factory``."""
    from trl import GRPOConfig, GRPOTrainer

    from forage.integrations.trl import environment_class, task_dataset

    env_kwargs = dict(env_kwargs or {})
    environment = environment_class(env_id, **env_kwargs)
    args = GRPOConfig(output_dir=output_dir, max_steps=steps, per_device_train_batch_size=batch_size,
                      num_generations=num_generations, learning_rate=learning_rate, logging_steps=1,
                      save_strategy="no", report_to="none", use_cpu=True, bf16=False,
                      max_completion_length=max_completion_length, **config)
    return GRPOTrainer(model=model, processing_class=tool_calling_tokenizer(tokenizer), args=args,
                       train_dataset=dataset if dataset is not None else task_dataset(env_id, num_tasks, **env_kwargs),
                       reward_funcs=list(extra_reward_funcs or []), environment_factory=environment)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="a model folder, or 'default' (the prepared SmolLM2)")
    parser.add_argument("--env", default="forage/LookupQA-1hop-v0")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--out", default="runs/trl-env")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forage.agents.models import resolve_model

    path = resolve_model(args.model)
    trainer = build_trainer(AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path), args.env,
                            steps=args.steps, num_generations=args.num_generations, batch_size=args.num_generations,
                            learning_rate=args.lr, output_dir=args.out)
    trainer.train()
    trainer.save_model(args.out)
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
