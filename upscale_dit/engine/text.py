"""Prompt → UMT5 embeddings, padded the way Wan was trained (real tokens, then zeros)."""

from __future__ import annotations

import html
import re

import torch


def clean_prompt(text: str) -> str:
    """Fix mojibake (ftfy), unescape HTML twice, collapse whitespace: the cleaning Wan's prompts went through."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


def embed_prompts(tokenizer, text_encoder, prompts: list[str], *, max_length: int, device: torch.device,
                  clean: bool = True) -> torch.Tensor:
    """Embed ``prompts`` → ``[B, max_length, d_model]``; positions after each prompt's last token are exact zeros.

    Differentiable, so a trainer of the text encoder embeds exactly as generation does; ``clean=False`` skips
    :func:`clean_prompt` for text already clean (a trainer's generated captions), which is slow per step.
    """
    tokens = tokenizer(
        [clean_prompt(p) for p in prompts] if clean else list(prompts),
        padding="max_length",
        max_length=max_length,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    mask = tokens.attention_mask.to(device)
    hidden = text_encoder(tokens.input_ids.to(device), mask).last_hidden_state
    keep = mask.gt(0).unsqueeze(-1)
    return torch.where(keep, hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device))


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str], *, max_length: int, device: torch.device) -> torch.Tensor:
    """:func:`embed_prompts` without gradients: what generation uses."""
    return embed_prompts(tokenizer, text_encoder, prompts, max_length=max_length, device=device)
