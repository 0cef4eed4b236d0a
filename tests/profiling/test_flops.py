"""FLOP formulas against torch's FlopCounterMode on tiny real models, hand counts, and the spec's tables."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from upscale_dit.profiling import (
    Branch,
    TokenGrid,
    attention_flops,
    forward_flops,
    inward_window_keys,
    text_encoder_flops,
)

from .configs import T2V_1_3B, T2V_14B, TINY_I2V, TINY_TRANSFORMER, TINY_UMT5, TINY_UMT5_RELU

aten = torch.ops.aten
# FlopCounterMode has no formula for the CPU flash kernel SDPA dispatches to; count it as the CUDA kernels are.
_CPU_SDPA = {
    aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *args, **kwargs: sdpa_flop_count(q, k, v)
}


def _count(fn) -> dict[str, int]:
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_CPU_SDPA) as counter:
        fn()
    return {str(op).split(".")[-1]: n for op, n in counter.get_flop_counts()["Global"].items()}


@pytest.mark.parametrize(
    ("config", "latent", "text", "image"),
    [(TINY_TRANSFORMER, (3, 8, 12), 7, None), (TINY_TRANSFORMER, (5, 6, 4), 13, None), (TINY_I2V, (3, 8, 12), 7, 5)],
    ids=["tiny", "tiny-odd", "tiny-i2v"],
)
def test_forward_matches_flop_counter(config, latent, text, image):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    model = WanTransformer3DModel.from_config(config).eval()
    f, h, w = latent
    x = torch.randn(1, config["in_channels"], f, h, w)
    context = torch.randn(1, text, config["text_dim"])
    kwargs = {}
    if image is not None:
        kwargs["encoder_hidden_states_image"] = torch.randn(1, image, config["image_dim"])
    counted = _count(lambda: model(x, torch.tensor([500]), context, **kwargs))

    n = f * (h // 2) * (w // 2)
    est = forward_flops(config, num_tokens=n, text_tokens=text, branches=[Branch(n)], image_tokens=image)
    assert est.total == sum(counted.values())
    assert est.attention == counted["_scaled_dot_product_flash_attention_for_cpu"]
    assert est.linear == counted["addmm"] + counted["convolution"]


def test_tiny_forward_by_hand():
    # D = 64, Fd = 128, 2 blocks, N = 3·4·6 = 72 tokens, S = 7 text tokens, text_dim 32, freq_dim 256.
    d, fd, n, s = 64, 128, 72, 7
    est = forward_flops(TINY_TRANSFORMER, num_tokens=n, text_tokens=s, branches=[Branch(n)])
    assert est.self_attn_linear == 2 * (4 * 2 * n * d * d)  # q, k, v, out in each block
    assert est.self_attn_core == 2 * (4 * n * n * d)  # QKᵀ and PV over all heads
    assert est.cross_attn_linear == 2 * (2 * 2 * n * d * d + 2 * 2 * s * d * d)  # q, out on video; k, v on text
    assert est.cross_attn_core == 2 * (4 * n * s * d)
    assert est.ffn == 2 * (2 * 2 * n * d * fd)
    patch, head = 2 * n * (16 * 4) * d, 2 * n * d * 64
    time_mlp = 2 * (256 * d + d * d + d * 6 * d)
    text_proj = 2 * s * (32 * d + d * d)
    assert est.embed_and_head == patch + head + time_mlp + text_proj


@pytest.mark.parametrize("config", [TINY_UMT5, TINY_UMT5_RELU], ids=["gated", "relu"])
def test_text_encoder_matches_flop_counter(config):
    from transformers import UMT5Config, UMT5EncoderModel

    model = UMT5EncoderModel(UMT5Config(**config)).eval()
    ids = torch.randint(0, config["vocab_size"], (1, 11))
    counted = _count(lambda: model(ids))
    assert text_encoder_flops(config, 11) == sum(counted.values())


def test_branch_kinds_add_up():
    n, s = 1000, 512
    dense = forward_flops(T2V_1_3B, num_tokens=n, text_tokens=s, branches=[Branch(n)])
    window = forward_flops(T2V_1_3B, num_tokens=n, text_tokens=s, branches=[Branch(300)])
    cached = forward_flops(T2V_1_3B, num_tokens=n, text_tokens=s, branches=[Branch(300, "cached")])
    dual = forward_flops(T2V_1_3B, num_tokens=n, text_tokens=s, branches=[Branch(n), Branch(300, "reused")])
    assert window.self_attn_core == pytest.approx(0.3 * dense.self_attn_core, rel=1e-9)
    assert window.ffn == dense.ffn and window.cross_attn_linear == dense.cross_attn_linear
    # Reading the cache leaves only the output projection of cross-attention.
    assert cached.cross_attn_core == 0
    assert cached.cross_attn_linear == 30 * 2 * n * 1536 * 1536
    # The override: the window branch adds its self-attention and FFN, not a second cross-attention.
    assert dual.cross_attn_linear == dense.cross_attn_linear
    assert dual.self_attn_core == dense.self_attn_core + window.self_attn_core
    assert dual.ffn == 2 * dense.ffn
    with pytest.raises(ValueError, match="`cross`"):
        forward_flops(T2V_1_3B, num_tokens=n, text_tokens=s, branches=[Branch(n, "bogus")])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("config", "dense_pf", "linear_pf", "window_pf"),
    [(T2V_1_3B, 5.4, 0.43, 1.09), (T2V_14B, 24.1, 4.10, 4.84)],
    ids=["1.3b", "14b"],
)
def test_1080p_table(config, dense_pf, linear_pf, window_pf):
    # ecosystem.md §3b (its "linear" is 12·D² + 4·D·Fd per token and block: it leaves out cross-attention's k, v).
    grid = TokenGrid(21, 68, 120)
    n = grid.num_tokens
    est = forward_flops(config, num_tokens=n, text_tokens=512, branches=[Branch(n)])
    window = inward_window_keys(grid, (31, 53))
    heads, layers = config["num_attention_heads"], config["num_layers"]
    window_attn = attention_flops(n, window, heads, 128) * layers
    assert est.self_attn_core / 1e15 == pytest.approx(dense_pf, abs=0.05)
    assert (est.self_attn_linear + est.ffn + est.cross_attn_linear) / 1e15 == pytest.approx(linear_pf, rel=0.03)
    assert window_attn / 1e15 == pytest.approx(window_pf, abs=0.01)
    # Window attention at the exact density is ≈ 0.2 of dense attention (1643 of 8160 positions per frame).
    assert window_attn / est.self_attn_core == pytest.approx(1643 / 8160, rel=1e-9)
