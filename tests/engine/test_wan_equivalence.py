"""Our sampling loop against diffusers' WanPipeline: same components, inputs and seed → the same video."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from upscale_dit import build_generate_config
from upscale_dit.engine.device import Placement
from upscale_dit.engine.loading import load_components, resolve_model
from upscale_dit.engine.vae import decode_frames
from upscale_dit.generation import encode_text, resolve_run, sample_latents

PROMPT, NEGATIVE = "a red striped circle moving left", "blurry, low quality"


def _run(tmp_path, **flags):
    config = build_generate_config(PROMPT, model="tiny", output__path=str(tmp_path / "o.mp4"),
                                   sampling__negative_prompt=NEGATIVE, **flags)
    run, source = resolve_run(config)
    parts = load_components(source, dtype=torch.float32, device=torch.device("cpu"))
    return run, source, parts


def _sample(run, parts, seed):
    placement = Placement(torch.device("cpu"), offload=False)
    cond, uncond = encode_text(run, parts, placement=placement)
    return sample_latents(run, parts, cond=cond, uncond=uncond, generator=torch.Generator().manual_seed(seed),
                          placement=placement)


def _pipeline(parts):
    from diffusers import UniPCMultistepScheduler, WanPipeline

    scheduler = UniPCMultistepScheduler.from_config(parts["scheduler"])
    return WanPipeline(tokenizer=parts["tokenizer"], text_encoder=parts["text_encoder"],
                       transformer=parts["transformer"], vae=parts["vae"], scheduler=scheduler)


@pytest.mark.parametrize("guidance", [5.0, 1.0])
def test_latents_bit_equal_to_wan_pipeline(tmp_path, guidance):
    run, _, parts = _run(tmp_path, sampling__steps=3, sampling__seed=11, sampling__guidance=guidance)
    ours = _sample(run, parts, 11)
    pipe = _pipeline(parts)
    cfg = run.config
    theirs = pipe(PROMPT, negative_prompt=NEGATIVE, height=run.size.gen_height, width=run.size.gen_width, num_frames=run.frames,
                  num_inference_steps=3, guidance_scale=guidance, generator=torch.Generator().manual_seed(11),
                  max_sequence_length=cfg.sampling.max_sequence_length, output_type="latent").frames
    assert ours.shape == theirs.shape == run.latent_shape
    assert torch.equal(ours, theirs)


def test_decoded_frames_match_wan_pipeline(tmp_path):
    run, _, parts = _run(tmp_path, sampling__steps=2, sampling__seed=5)
    latents = _sample(run, parts, 5)
    ours = np.concatenate(list(decode_frames(parts["vae"], latents)))
    theirs = _pipeline(parts)(PROMPT, negative_prompt=NEGATIVE, height=run.size.gen_height, width=run.size.gen_width,
                              num_frames=run.frames, num_inference_steps=2, generator=torch.Generator().manual_seed(5),
                              max_sequence_length=64, output_type="np").frames[0]
    assert ours.shape == theirs.shape == (run.frames, run.size.gen_height, run.size.gen_width, 3)
    theirs_u8 = (theirs * 255).round().astype(np.int16)
    diff = np.abs(ours.astype(np.int16) - theirs_u8)
    assert diff.max() <= 1  # float-level agreement; at most one rounding step at a boundary
    assert (diff > 0).mean() < 1e-3


def test_saved_folder_loads_and_reproduces_tiny(tmp_path):
    _, source, parts = _run(tmp_path)
    folder = tmp_path / "tiny-pipeline"
    _pipeline(parts).save_pretrained(folder)
    from_folder = resolve_model(str(folder))
    assert from_folder.preset.name == "tiny" and from_folder.folder == folder
    loaded = load_components(from_folder, dtype=torch.float32, device=torch.device("cpu"))
    for name in ("transformer", "text_encoder", "vae"):
        a, b = parts[name].state_dict(), loaded[name].state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert loaded["tokenizer"]("a red circle").input_ids == parts["tokenizer"]("a red circle").input_ids


def test_incomplete_folder_is_refused(tmp_path):
    from upscale_dit.errors import ModelNotFoundError

    (tmp_path / "transformer").mkdir()
    with pytest.raises(ModelNotFoundError, match="missing tokenizer/, text_encoder/, vae/, scheduler/"):
        resolve_model(str(tmp_path))
