"""``python -m forage.train --config FILE [...]``: ``forage train`` as a module, the entry torchrun starts on each rank.

On a cluster: ``torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500
-m forage.train --config run.yaml``. It takes the options of ``forage train`` (without ``--nproc``).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Run ``forage train`` with ``argv`` (default: the command line)."""
    from .cli import app

    try:
        app(["train", *(sys.argv[1:] if argv is None else argv)], prog_name="forage.train")
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
