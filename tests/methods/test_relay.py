"""`apply_relay`: stage 2 only, GCLF attention, every accepted file format, refusals, and a generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.training.helpers import make_images, tiny_config
from upscale_dit.adapters import AdapterFileError, read_relay_adapter, strip_adapter
from upscale_dit.attention.gclf import GCLFAttnProcessor, apply_gclf
from upscale_dit.config import get_model_preset
from upscale_dit.engine.tiny import TINY_TRANSFORMER_CONFIG, build_tiny_components
from upscale_dit.methods.relay import apply_relay, check_relay_file, relay_geometry
from upscale_dit.training import AdapterConfig, train_relay
from upscale_dit.training.lora import add_stage_adapter, load_adapter_state

PRESET = get_model_preset("tiny")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    images = tmp_path_factory.mktemp("images")
    make_images(images, 2)
    return train_relay(tiny_config(images, tmp_path_factory.mktemp("runs") / "run")).run


@pytest.fixture(scope="module")
def files(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("stripped")
    return {"relay": run / "relay.safetensors", "stage2": run / "stage2.safetensors",
            "diffusers": strip_adapter(run, out / "d.safetensors", fmt="diffusers"),
            "comfy": strip_adapter(run, out / "c.safetensors", fmt="comfy")}


@pytest.fixture(scope="module")
def transformer():
    return build_tiny_components()["transformer"]


GEOMETRY = relay_geometry(PRESET, 1, 192, 320)
_G = torch.Generator().manual_seed(5)
LATENTS, TEXT = torch.randn(1, 16, 1, 24, 40, generator=_G), torch.randn(1, 64, 32, generator=_G)


def _forward(transformer):
    with torch.no_grad():
        return transformer(hidden_states=LATENTS, timestep=torch.tensor([800.0]), encoder_hidden_states=TEXT,
                           return_dict=False)[0]


def _expected(run, stages):
    """Base + the given stages' LoRAs through peft directly, with GCLF: what apply_relay must reproduce."""
    transformer = build_tiny_components()["transformer"]
    _, states = read_relay_adapter(run / "relay.safetensors")
    for stage in stages:
        add_stage_adapter(transformer, stage, AdapterConfig(), seed=0)
        load_adapter_state(transformer, stage, states[stage])
    transformer.set_adapters([f"stage{s}" for s in stages])
    with apply_gclf(transformer, GEOMETRY):
        return _forward(transformer)


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")  # _expected stacks two adapters on purpose
def test_every_format_applies_stage2_only_with_gclf(run, files, transformer):
    stage2_only, both = _expected(run, (2,)), _expected(run, (1, 2))
    assert not torch.allclose(stage2_only, both, atol=1e-4)
    for name, path in files.items():
        with apply_relay(transformer, path, geometry=GEOMETRY, base_model="tiny") as handle:
            assert handle.info.base_model == "tiny"
            assert isinstance(transformer.attn_processors["blocks.0.attn1.processor"], GCLFAttnProcessor)
            out = _forward(transformer)
        assert torch.allclose(out, stage2_only, rtol=1e-5, atol=1e-6), name


def test_remove_restores_the_transformer_exactly(files, transformer):
    stock = _forward(transformer)
    handle = apply_relay(transformer, files["comfy"], geometry=GEOMETRY)
    with pytest.raises(AdapterFileError, match="already applied"):
        apply_relay(transformer, files["diffusers"], geometry=GEOMETRY)
    handle.remove()
    handle.remove()  # idempotent
    assert type(transformer.blocks[0].attn1.to_q) is torch.nn.Linear
    assert torch.equal(_forward(transformer), stock)


def test_refusals(run, files, transformer, tmp_path):
    with pytest.raises(AdapterFileError, match="is a stage-1 Relay adapter; generation uses the stage-2 LoRA only"):
        apply_relay(transformer, run / "stage1.safetensors", geometry=GEOMETRY)
    with pytest.raises(AdapterFileError, match="trained on `tiny`, not `wan2.1-t2v-1.3b`"):
        apply_relay(transformer, files["diffusers"], geometry=GEOMETRY, base_model="wan2.1-t2v-1.3b")
    from diffusers import WanTransformer3DModel

    other = WanTransformer3DModel(**{**TINY_TRANSFORMER_CONFIG, "num_layers": 1})
    with pytest.raises(AdapterFileError, match=r"does not match this model \(1 layers"):
        apply_relay(other, files["comfy"], geometry=GEOMETRY)
    assert check_relay_file(files["comfy"], base_model="tiny").stage_sizes[2] == (320, 192)  # header only, no model
    with pytest.raises(AdapterFileError, match="not `wan2.1-t2v-14b`"):
        check_relay_file(files["relay"], base_model="wan2.1-t2v-14b")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(AdapterFileError, match="cannot read"):
        apply_relay(transformer, tmp_path / "junk.safetensors", geometry=GEOMETRY)
    assert not getattr(transformer, "peft_config", None)  # nothing was left half-applied


def _generate(*args):
    from tests.helpers import invoke_cli

    return invoke_cli("generate", "a pattern", "--model", "tiny", *args)


def test_generate_method_relay_at_2x_from_noise(files, tmp_path):
    """`udit generate --method relay`: base + stage 2 + GCLF at 2x native, from noise, comfy-format file."""
    import json

    from tests.helpers import read_mp4

    out = tmp_path / "relay.mp4"
    result = _generate("--method", "relay", "--lora", str(files["comfy"]), "--res", "2x", "--frames", "5",
                       "--out", str(out))
    assert result.exit_code == 0, result.output
    assert read_mp4(out)[0].shape == (5, 192, 320, 3)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    relay = sidecar["config"]["method"]["relay"]
    assert relay["lora"] == str(files["comfy"]) and relay["scheduler"] == "euler" and relay["shift"] == 5.0
    assert "base_denoise" not in sidecar["timings_s"]  # directly at the target size, no base stage


def test_generate_method_relay_from_base(files, tmp_path):
    out = tmp_path / "sdedit.mp4"
    result = _generate("--method", "relay", "--lora", str(files["diffusers"]), "--from-base", "--strength", "0.5",
                       "--res", "2x", "--frames", "5", "--save-base", "--out", str(out))
    assert result.exit_code == 0, result.output
    from tests.helpers import read_mp4

    assert read_mp4(out)[0].shape == (5, 192, 320, 3)
    assert read_mp4(tmp_path / "sdedit.base.mp4")[0].shape == (5, 96, 160, 3)


def test_generate_relay_refusals(run, tmp_path):
    out = ["--out", str(tmp_path / "o.mp4")]
    result = _generate("--method", "relay", *out)
    assert result.exit_code == 2 and "--method relay needs the stage-2 LoRA: pass --lora FILE" in result.stderr
    result = _generate("--method", "relay", "--lora", str(run / "stage1.safetensors"), *out)
    assert result.exit_code == 2 and "is a stage-1 Relay adapter; generation uses the stage-2 LoRA only" in result.stderr
    result = _generate("--lora", str(run / "relay.safetensors"), *out)
    assert result.exit_code == 2 and "--lora is for --method relay; this run uses `direct`" in result.stderr
    result = _generate("--method", "relay", "--lora", str(run / "relay.safetensors"), "--strength", "0.5", *out)
    assert result.exit_code == 2 and "--strength sets how much a refinement re-noises" in result.stderr
    assert list(tmp_path.iterdir()) == []
