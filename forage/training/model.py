"""Model loading (HF folder, tiny random Llama, LoRA), token log-probs, and the frozen KL reference."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import torch

from .config import ModelConfig

__all__ = ["load_model", "device_dtype", "autocast_dtype", "token_logps", "Reference", "rollout_copy", "pad_id", "trainable"]


def device_dtype(cfg: ModelConfig) -> tuple[torch.device, torch.dtype]:
    """The device and dtype a :class:`ModelConfig` asks for (``auto``: CUDA + bf16 when present, else CPU + fp32)."""
    dev = cfg.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(dev)
    if cfg.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, cfg.dtype)
    return device, dtype


def autocast_dtype(cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> torch.dtype | None:
    """The dtype the forward/backward autocasts to (None: none): ``model.autocast``, where ``auto`` means bf16
    for fp32 weights on a CPU with hardware bf16 (about 2x the fp32 speed of a SmolLM2 step on AVX-512 BF16)."""
    if cfg.autocast == "off":
        return None
    if cfg.autocast == "bfloat16":
        return torch.bfloat16
    from ..machine import cpu_has_native_bf16

    return torch.bfloat16 if device.type == "cpu" and dtype == torch.float32 and cpu_has_native_bf16() else None


def load_model(cfg: ModelConfig, seed: int = 0) -> tuple[Any, Any]:
    """(model, tokenizer) for a :class:`ModelConfig`; LoRA and gradient checkpointing applied."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..agents.models import resolve_model

    device, dtype = device_dtype(cfg)
    tok = None
    if cfg.path == "tiny-random":
        from transformers import LlamaConfig, LlamaForCausalLM

        if cfg.tokenizer:
            tok = AutoTokenizer.from_pretrained(resolve_model(cfg.tokenizer))
        vocab = cfg.tiny_vocab or (len(tok) if tok is not None else 0)
        if not vocab:
            raise ValueError("model.path tiny-random needs model.tokenizer or model.tiny_vocab")
        h = cfg.tiny_hidden
        lcfg = LlamaConfig(vocab_size=vocab, hidden_size=h, intermediate_size=2 * h, num_hidden_layers=cfg.tiny_layers,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                           tie_word_embeddings=True)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = LlamaForCausalLM(lcfg)
        if tok is not None:
            model.generation_config.eos_token_id = tok.eos_token_id
    else:
        path = resolve_model(cfg.path)
        tok = AutoTokenizer.from_pretrained(resolve_model(cfg.tokenizer) if cfg.tokenizer else path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.to(device=device, dtype=dtype)
    model.forage_autocast = autocast_dtype(cfg, device, dtype)   # read by token_logps
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if cfg.lora.enabled:
        try:
            from peft import LoraConfig as PeftLora, get_peft_model
        except ImportError:
            raise RuntimeError("model.lora needs peft: pip install 'forage-gym[train]'") from None
        model = get_peft_model(model, PeftLora(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                               target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM"))
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
    return model, tok


def trainable(model: Any) -> list[tuple[str, torch.nn.Parameter]]:
    """The (name, parameter) pairs that train (all of them, or the LoRA adapters)."""
    return [(k, p) for k, p in model.named_parameters() if p.requires_grad]


def pad_id(tokenizer: Any) -> int:
    """The tokenizer's pad id (0 without one)."""
    pid = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
    return int(pid) if pid is not None else 0


def token_logps(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: int,
                temperature: float = 1.0, with_entropy: bool = False, entropy_grad: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of tokens ``T-keep+1 .. T-1`` given the ones before, under ``softmax(logits / temperature)``.

    Position j of the result is the log-prob of ``input_ids[:, T - keep + 1 + j]`` from the logits
    at position ``T - keep + j`` (only the last ``keep`` positions' logits are computed). The
    entropy of the same distributions comes without autograd unless ``entropy_grad``. The forward runs
    under the autocast dtype :func:`load_model` chose (``model.forage_autocast``); log-softmax is fp32.
    """
    ac = getattr(model, "forage_autocast", None)
    with torch.autocast(input_ids.device.type, dtype=ac) if ac is not None else contextlib.nullcontext():
        logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep, use_cache=False).logits
    logits = logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    target = input_ids[:, input_ids.shape[1] - keep + 1:]
    # log p = logit - logsumexp: no [B, T, vocab] log-softmax kept beside the logits (SmolLM2's vocabulary
    # is 49k: that tensor is 0.8 GB per 4k tokens), and the entropy without autograd is taken in chunks
    lse = torch.logsumexp(logits, -1)
    logp = logits.gather(-1, target[..., None]).squeeze(-1) - lse
    ent = None
    if with_entropy:
        if entropy_grad:
            ent = lse - (torch.softmax(logits, -1) * logits).sum(-1)
        else:
            with torch.no_grad():
                ent = torch.empty_like(lse)
                for i in range(0, logits.shape[1], 256):
                    x, z = logits[:, i:i + 256].detach(), lse[:, i:i + 256].detach()
                    ent[:, i:i + 256] = z - ((x - z[..., None]).exp() * x).sum(-1)
    return logp, ent


class Reference:
    """The frozen KL reference: a snapshot of the policy taken after the cold start.

    Without LoRA it is a frozen copy of the model. With LoRA it is the adapters' values at the
    snapshot: for a reference forward they are copied into the live adapters and copied back
    afterwards (exact copies; the frozen base is shared), so a LoRA run keeps one model in memory.
    """

    def __init__(self, model: Any, lora: bool) -> None:
        self.lora = lora
        if lora:
            self.model = model
            self.adapters = {k: p.detach().clone() for k, p in trainable(model)}
        else:
            self.names = [k for k, _ in trainable(model)]
            self.model = copy.deepcopy(model).eval()
            for p in self.model.parameters():
                p.requires_grad_(False)
            self.adapters = {}

    def logps(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: int, temperature: float) -> torch.Tensor:
        """The reference's token log-probs (as :func:`token_logps`), without autograd."""
        with torch.no_grad():
            if not self.lora:
                return token_logps(self.model, input_ids, attention_mask, keep, temperature)[0]
            live = dict(trainable(self.model))
            saved = {k: p.detach().clone() for k, p in live.items()}
            try:
                for k, p in live.items():
                    p.copy_(self.adapters[k])
                return token_logps(self.model, input_ids, attention_mask, keep, temperature)[0]
            finally:
                for k, p in live.items():
                    p.copy_(saved[k])

    def parameters(self) -> dict[str, torch.Tensor]:
        """The reference's values of the trainable parameters (name -> tensor)."""
        if self.lora:
            return dict(self.adapters)
        return {k: p for k, p in self.model.named_parameters()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: the trainable parameters' reference values."""
        if self.lora:
            return {k: v.cpu().clone() for k, v in self.adapters.items()}
        names = set(self.names)
        return {k: v.detach().cpu().clone() for k, v in self.model.named_parameters() if k in names}

    def load_state_dict(self, st: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`."""
        if self.lora:
            self.adapters = {k: v.to(self.adapters[k].device, self.adapters[k].dtype) for k, v in st.items()}
            return
        self.model.load_state_dict(st, strict=False)


def rollout_copy(model: Any) -> Any:
    """A CPU fp32 copy of the training model for rollout actors (KV cache on, no checkpointing)."""
    m = copy.deepcopy(model).to("cpu", dtype=torch.float32).eval()
    if hasattr(m, "gradient_checkpointing_disable"):
        m.gradient_checkpointing_disable()
    if getattr(m, "config", None) is not None:
        m.config.use_cache = True
    for p in m.parameters():
        p.requires_grad_(False)
    return m
