"""Relay LoRA files: strip-adapter keeps exactly stage 2, both formats load through diffusers identically."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.training.helpers import make_images, tiny_config
from upscale_dit.adapters import (
    AdapterFileError,
    RelayAdapterInfo,
    encode_stage,
    model_signature,
    read_relay_adapter,
    read_safetensors,
    strip_adapter,
    write_safetensors_atomic,
)
from upscale_dit.engine.tiny import build_tiny_components
from upscale_dit.errors import OutputError
from upscale_dit.training import AdapterConfig, train_relay
from upscale_dit.training.lora import adapter_state, add_stage_adapter


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    images = tmp_path_factory.mktemp("images")
    make_images(images, 2)
    return train_relay(tiny_config(images, tmp_path_factory.mktemp("runs") / "run")).run


def test_stripped_files_hold_exactly_the_stage2_tensors(run, tmp_path):
    _, stages = read_relay_adapter(run / "relay.safetensors")
    diffusers_file = strip_adapter(run, tmp_path / "d.safetensors", fmt="diffusers")
    tensors, meta = read_safetensors(diffusers_file)
    assert tensors.keys() == {f"transformer.{k}" for k in stages[2]}
    assert all(torch.equal(tensors[f"transformer.{k}"], v) for k, v in stages[2].items())
    assert meta["udit.stages"] == "2" and "lora_adapter_metadata" in meta

    comfy_file = strip_adapter(run / "relay.safetensors", tmp_path / "c.safetensors", fmt="comfy")
    tensors, meta = read_safetensors(comfy_file)
    assert "lora_adapter_metadata" not in meta  # diffusers would apply alpha twice
    lora_keys = {k for k in tensors if not k.endswith(".alpha")}
    assert len(lora_keys) == len(stages[2])
    assert torch.equal(tensors["diffusion_model.blocks.1.self_attn.q.lora_A.weight"],
                       stages[2]["blocks.1.attn1.to_q.lora_A.weight"])
    assert torch.equal(tensors["diffusion_model.blocks.0.cross_attn.o.lora_B.weight"],
                       stages[2]["blocks.0.attn2.to_out.0.lora_B.weight"])
    assert torch.equal(tensors["diffusion_model.blocks.0.ffn.0.lora_A.weight"],
                       stages[2]["blocks.0.ffn.net.0.proj.lora_A.weight"])
    assert float(tensors["diffusion_model.blocks.0.ffn.2.alpha"]) == 32.0
    info, back = read_relay_adapter(comfy_file)
    assert info.key_format == "comfy" and info.alpha == 32.0
    assert all(torch.equal(back[2][k], v) for k, v in stages[2].items())


def test_strip_refusals(run, tmp_path):
    with pytest.raises(AdapterFileError, match=r"holds no stage-2 LoRA \(stages: 1\)"):
        strip_adapter(run / "stage1.safetensors", tmp_path / "x.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    write_safetensors_atomic(foreign, {"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 64)}, {})
    with pytest.raises(AdapterFileError, match="not a udit Relay LoRA"):
        strip_adapter(foreign, tmp_path / "x.safetensors")
    (tmp_path / "exists.safetensors").write_bytes(b"keep")
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        strip_adapter(run, tmp_path / "exists.safetensors")
    assert (tmp_path / "exists.safetensors").read_bytes() == b"keep"
    strip_adapter(run, tmp_path / "exists.safetensors", overwrite=True)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    with pytest.raises(AdapterFileError, match="has not finished stage 2"):
        strip_adapter(unfinished, tmp_path / "y.safetensors")
    with pytest.raises(AdapterFileError, match="--format must be one of diffusers, comfy"):
        strip_adapter(run, tmp_path / "z.safetensors", fmt="kohya")


def _random_stage2_file(tmp_path, fmt, *, rank=4, alpha=2.0):
    """A stage-2 file with random (non-zero) A and B and alpha != rank, written by encode_stage."""
    transformer = build_tiny_components()["transformer"]
    settings = AdapterConfig(rank=rank, alpha=alpha)
    add_stage_adapter(transformer, 2, settings, seed=0)
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in adapter_state(transformer, 2).items()}
    info = RelayAdapterInfo(base_model="tiny", base_arch=model_signature(transformer.config), native_size=(160, 96),
                            stage_sizes={1: (160, 96), 2: (320, 192)}, steps={2: 1}, rank=rank, alpha=alpha,
                            targets=settings.targets, stages=(2,))
    tensors, meta = encode_stage(state, info, 2, fmt)
    return write_safetensors_atomic(tmp_path / f"{fmt}.safetensors", tensors, meta)


def _pipeline_output(lora_file):
    from diffusers import WanPipeline

    parts = build_tiny_components()
    pipe = WanPipeline(**parts)
    if lora_file is not None:
        pipe.load_lora_weights(str(lora_file), adapter_name="relay")
    g = torch.Generator().manual_seed(3)
    latents, text = torch.randn(1, 16, 1, 12, 20, generator=g), torch.randn(1, 64, 32, generator=g)
    with torch.no_grad():
        return pipe.transformer(hidden_states=latents, timestep=torch.tensor([600.0]), encoder_hidden_states=text,
                                return_dict=False)[0]


def test_comfy_file_loads_through_diffusers_like_the_diffusers_file(tmp_path):
    diffusers_out = _pipeline_output(_random_stage2_file(tmp_path, "diffusers"))
    comfy_out = _pipeline_output(_random_stage2_file(tmp_path, "comfy"))
    base = _pipeline_output(None)
    assert not torch.allclose(diffusers_out, base, atol=1e-3)  # the LoRA does something
    assert torch.allclose(comfy_out, diffusers_out, rtol=1e-5, atol=1e-6)


def test_header_round_trip_and_damaged_header(tmp_path):
    info = RelayAdapterInfo(base_model="tiny", base_arch={"num_layers": 2}, native_size=(160, 96),
                            stage_sizes={1: (160, 96), 2: (320, 192)}, steps={1: 5, 2: 7}, rank=32, alpha=32.0,
                            targets=("attn1.to_q",))
    assert RelayAdapterInfo.from_metadata(info.to_metadata(), source="x") == info
    broken = {**info.to_metadata(), "udit.rank": "many"}
    with pytest.raises(AdapterFileError, match="damaged udit header"):
        RelayAdapterInfo.from_metadata(broken, source="x")
    assert dataclasses.replace(info, stages=(2,)).to_metadata()["udit.stages"] == "2"
