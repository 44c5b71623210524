"""Evaluate a model on a Forage env with ``verifiers`` (its ``evaluate``; ``vf-eval`` works the same way).

    forage serve policy --port 8000 &              # vLLM with tool-call parsing (hermes for SmolLM2/Qwen)
    python examples/verifiers_eval.py --base-url http://127.0.0.1:8000/v1 -n 4 -r 2
    vf-eval forage.integrations.verifiers -a '{"forage_env": "forage/LookupQA-1hop-v0"}' \\
        -b http://127.0.0.1:8000/v1 -m MODEL -k OPENAI_API_KEY -n 4 -r 2
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="forage/LookupQA-1hop-v0")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default=None, help="default: the first model the server lists")
    parser.add_argument("-n", "--num-examples", type=int, default=4)
    parser.add_argument("-r", "--rollouts", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()

    import httpx
    from openai import AsyncOpenAI

    from forage.integrations.verifiers import load_environment

    model = args.model or httpx.get(args.base_url.rstrip("/") + "/models", timeout=30).json()["data"][0]["id"]
    env = load_environment(args.env, num_tasks=args.num_examples)
    res = env.evaluate_sync(AsyncOpenAI(base_url=args.base_url, api_key="unused"), model,
                            sampling_args={"max_tokens": args.max_tokens, "temperature": 0.7},
                            num_examples=args.num_examples, rollouts_per_example=args.rollouts)
    rewards = [o["reward"] for o in res["outputs"]]
    print(f"{len(rewards)} rollouts, mean reward {sum(rewards) / max(1, len(rewards)):.3f}, "
          f"correct {sum(o['metrics'].get('forage_correct', 0.0) for o in res['outputs']):g}")


if __name__ == "__main__":
    main()
