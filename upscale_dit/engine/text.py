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


def tokenize_prompts(tokenizer, prompts: list[str], *, max_length: int, clean: bool = True):
    """Token ids and attention mask ``[B, max_length]`` (padded, truncated, with ``</s>``).

    ``clean=False`` skips :func:`clean_prompt` for text already clean (a trainer's generated captions).
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
    return tokens.input_ids, tokens.attention_mask


def embed_tokens(text_encoder, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """UMT5 hidden states with every position after a prompt's last token set to exact zeros (as Wan trained)."""
    hidden = text_encoder(input_ids, mask).last_hidden_state
    keep = mask.gt(0).unsqueeze(-1)
    return torch.where(keep, hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device))


def embed_prompts(tokenizer, text_encoder, prompts: list[str], *, max_length: int, device: torch.device,
                  clean: bool = True) -> torch.Tensor:
    """Embed ``prompts`` → ``[B, max_length, d_model]``; positions after each prompt's last token are exact zeros.

    Differentiable, so a trainer of the text encoder embeds exactly as generation does.
    """
    input_ids, mask = tokenize_prompts(tokenizer, prompts, max_length=max_length, clean=clean)
    return embed_tokens(text_encoder, input_ids.to(device), mask.to(device))


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str], *, max_length: int, device: torch.device) -> torch.Tensor:
    """:func:`embed_prompts` without gradients: what generation uses."""
    return embed_prompts(tokenizer, text_encoder, prompts, max_length=max_length, device=device)
