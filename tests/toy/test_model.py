"""The toy model's definition, its diffusers folder, the bundled-weights path and the trainer (CPU, tiny runs)."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from tests.helpers import read_mp4
from upscale_dit.errors import ModelNotFoundError
from upscale_dit.toy import VOCABULARY, parse_caption, sample_scene
from upscale_dit.toy import model as toy
from upscale_dit.toy.data import ClipRequest, render_clip, scene_seed, vary_caption
from upscale_dit.toy.train import _lr_at, main as train_main


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory):
    """Freshly initialised toy parts saved as a diffusers folder (what training writes, untrained)."""
    parts = toy.build_toy_components(seed=3)
    folder = toy.save_pipeline_folder(parts, tmp_path_factory.mktemp("toy") / "weights", metadata={"seed": 3})
    return parts, folder


def test_tokenizer_gives_one_token_per_caption_word_and_normalises_case_and_punctuation():
    tokenizer = toy.build_toy_tokenizer()
    ids = tokenizer(list(VOCABULARY), add_special_tokens=False).input_ids
    assert all(len(word_ids) == 1 for word_ids in ids)
    assert len({word_ids[0] for word_ids in ids}) == len(VOCABULARY)
    assert tokenizer("A Red, striped CIRCLE!").input_ids == tokenizer("a red striped circle").input_ids
    unknown = tokenizer.convert_ids_to_tokens(tokenizer("a violet circle").input_ids)
    assert unknown == ["▁a", "<unk>", "▁circle", "</s>"]


def test_saved_folder_is_a_diffusers_wan_pipeline_in_float16_under_16_mib(toy_folder):
    parts, folder = toy_folder
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "WanPipeline"
    assert index["transformer"] == ["diffusers", "WanTransformer3DModel"]
    assert json.loads((folder / "training.json").read_text()) == {"seed": 3}
    assert toy.weights_size(folder) <= 16 * 2**20
    assert oct(folder.stat().st_mode & 0o777) == "0o755"
    assert {oct(f.stat().st_mode & 0o777) for f in folder.rglob("*") if f.is_file()} == {"0o644"}

    from diffusers import WanPipeline
    from safetensors import safe_open

    with safe_open(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    pipe = WanPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    for name in ("transformer", "text_encoder", "vae"):
        saved = pipe.components[name].state_dict()
        for key, value in parts[name].state_dict().items():
            torch.testing.assert_close(saved[key], value.half().float(), rtol=0, atol=0, msg=f"{name}.{key}")
    tokens = pipe.tokenizer("a red circle").input_ids
    assert tokens == parts["tokenizer"]("a red circle").input_ids


def test_folder_loads_through_the_engine_as_the_toy_preset(toy_folder, tmp_path):
    from upscale_dit import generate

    _, folder = toy_folder
    result = generate("a red striped circle moving left", model=str(folder), sampling__steps=2,
                      output__path=str(tmp_path / "a.mp4"))
    frames, fps = read_mp4(result.video)
    assert frames.shape == (17, 128, 128, 3) and fps == 16
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["config"]["model"] == str(folder)
    assert sidecar["derived"]["latent_shape"] == [1, 8, 5, 16, 16]


def test_toy_architecture_runs_with_random_weights_without_its_files(tmp_path):
    from upscale_dit import generate

    result = generate("a red circle", model="toy", runtime__random_weights=True, sampling__steps=2,
                      output__path=str(tmp_path / "r.mp4"))
    assert read_mp4(result.video)[0].shape == (17, 128, 128, 3)


def test_bundled_toy_resolves_to_the_package_folder_or_explains_how_to_get_it(toy_folder, tmp_path, monkeypatch):
    from upscale_dit.engine import loading

    _, folder = toy_folder
    monkeypatch.setattr(loading, "bundled_folder", lambda source: folder)
    assert loading.resolve_model("toy").folder == folder
    assert loading.resolve_model("toy").preset.name == "toy"

    monkeypatch.setattr(loading, "bundled_folder", lambda source: tmp_path / "missing")
    with pytest.raises(ModelNotFoundError, match=r"the `toy` model's weights are missing from this installation .*"
                                                 r"python -m upscale_dit\.toy\.train --out runs/toy"):
        loading.resolve_model("toy")
    assert loading.offline_demo_model() == "tiny"


def test_vary_caption_drops_only_optional_parts():
    caption = "a small red striped circle moving left on a dark blue vertical gradient background"
    assert vary_caption(caption, random.Random(0), drop=0.0) == caption
    assert vary_caption(caption, random.Random(0), drop=1.0) == "a red striped circle"
    plain = "a large cyan plain square standing still on a black background"
    assert vary_caption(plain, random.Random(0), drop=1.0) == "a cyan square"
    seen = {vary_caption(caption, random.Random(i)) for i in range(2000)}
    assert caption in seen and len(seen) == 8  # size, motion and background each kept or dropped
    for text in seen:  # the words keep their order: every variant is a subsequence of the caption
        words = iter(caption.split())
        assert all(word in words for word in text.split())


def test_training_clips_are_deterministic_and_match_their_captions():
    request = ClipRequest(scene_seed(7, 3), 64, 64, 5)
    video, caption = render_clip(request)
    again, caption_again = render_clip(request)
    assert video.shape == (5, 64, 64, 3) and (video == again).all() and caption == caption_again
    scene = sample_scene(request.seed, clip_seconds=0.5)
    assert parse_caption(caption) == scene.attributes()
    assert scene_seed(7, 3) != scene_seed(8, 3) and scene_seed(7, 3) != scene_seed(7, 4)


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    assert _lr_at(0, 1000, 1.0, warmup=100) == pytest.approx(0.01)
    assert _lr_at(49, 1000, 1.0, warmup=100) == pytest.approx(0.5)
    assert _lr_at(100, 1000, 1.0, warmup=100) == pytest.approx(1.0)
    assert _lr_at(550, 1000, 1.0, warmup=100) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert _lr_at(1000, 1000, 1.0, warmup=100) == pytest.approx(0.1)
    assert _lr_at(5000, 1000, 1.0, warmup=100) == pytest.approx(0.1)


def test_step_budget_turns_a_time_budget_into_a_step_count(monkeypatch):
    from upscale_dit.toy import train

    clock = iter([0.0, 10.0, 20.0])  # start, step 10, step 60: 0.2 s a step, 40 s left of 60
    monkeypatch.setattr(train.time, "monotonic", lambda: next(clock))
    budget = train._StepBudget(10_000, 1.0, started=train.time.monotonic(), calibrate_at=60)
    for step in range(1, 61):
        budget.after_step(step, torch.device("cpu"))
    assert budget.total == 60 + 200
    unbounded = train._StepBudget(123, None, started=0.0)
    unbounded.after_step(60, torch.device("cpu"))
    assert unbounded.total == 123


def test_trainer_writes_a_loadable_model_and_records_the_run(tmp_path):
    out = tmp_path / "run"
    train_main(["--out", str(out), "--device", "cpu", "--size", "32", "--frames", "5", "--workers", "1",
                "--vae-steps", "1", "--vae-batch", "1",
                "--vae-pool", "3", "--decoder-steps", "1", "--decoder-batch", "1", "--decoder-pool", "2",
                "--clips", "2", "--dit-steps", "2", "--dit-batch", "2", "--eval-prompts", "0"])
    meta = json.loads((out / "training.json").read_text())
    assert meta["seed"] == 0 and meta["vae"]["steps_run"] == 1 and meta["dit"]["steps_run"] == 2
    assert meta["decoder"]["steps_run"] == 1 and meta["decoder"]["frames"] == 5  # whole clips (--frames)
    assert meta["vae"]["command"] == meta["dit"]["command"] == meta["command"]
    assert (out / "vae_check.png").is_file()
    assert set(meta["vae"]["check"]) == {"l1", "colour_match_frac", "shape_match_frac"}
    assert 0 < meta["vae"]["check"]["l1"] < 2
    assert meta["command"].startswith("python -m upscale_dit.toy.train --out")
    assert meta["size_mib"] <= 16
    vae_config = json.loads((out / "weights" / "vae" / "config.json").read_text())
    assert len(vae_config["latents_std"]) == toy.LATENT_CHANNELS
    assert all(s > 0 for s in vae_config["latents_std"]) and vae_config["latents_std"] != [1.0] * 8

    from upscale_dit.engine.loading import load_components, resolve_model

    parts = load_components(resolve_model(str(out / "weights")), dtype=torch.float32, device=torch.device("cpu"))
    assert parts["transformer"].config.num_layers == toy.TOY_TRANSFORMER_CONFIG["num_layers"]

    # --stage decoder retrains only the decoder, into the existing folder: encoder, transformer, stats unchanged
    from safetensors.torch import load_file

    before = {name: load_file(out / "weights" / name / "diffusion_pytorch_model.safetensors")
              for name in ("vae", "transformer")}
    train_main(["--out", str(out), "--stage", "decoder", "--device", "cpu", "--size", "32", "--frames", "5",
                "--workers", "1", "--decoder-steps", "2",
                "--decoder-batch", "1", "--decoder-pool", "2", "--decoder-lr", "1e-2", "--eval-prompts", "0"])
    after = {name: load_file(out / "weights" / name / "diffusion_pytorch_model.safetensors")
             for name in ("vae", "transformer")}
    assert all(torch.equal(before["transformer"][k], v) for k, v in after["transformer"].items())
    changed = {k for k, v in after["vae"].items() if not torch.equal(before["vae"][k], v)}
    assert changed and all(k.startswith(("decoder.", "post_quant_conv.")) for k in changed)
    assert json.loads((out / "weights" / "vae" / "config.json").read_text())["latents_std"] == vae_config["latents_std"]
    assert json.loads((out / "training.json").read_text())["decoder"]["steps_run"] == 2


def test_trainer_runs_data_parallel_under_torchrun(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "upscale_dit.toy.train",
               "--out", str(out), "--device", "cpu", "--size", "32", "--frames", "5", "--workers", "2",
               "--vae-steps", "1", "--vae-batch", "2",
               "--vae-pool", "2", "--decoder-steps", "1", "--decoder-batch", "2", "--decoder-pool", "2",
               "--clips", "2", "--dit-steps", "2", "--dit-batch", "4", "--eval-prompts", "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    meta = json.loads((out / "training.json").read_text())
    assert meta["processes"] == 2 and meta["dit"]["steps_run"] == 2 and meta["dit"]["batch"] == 4
    assert (out / "weights" / "model_index.json").is_file()
    assert done.stdout.count("dit: 2 steps") == 1  # rank 0 reports, rank 1 stays quiet

    odd = subprocess.run(command[:-6] + ["--dit-batch", "3", "--vae-batch", "2", "--eval-prompts", "0"],
                         capture_output=True, text=True, timeout=300)
    assert odd.returncode != 0
    assert "--vae-batch" in odd.stderr or "--dit-batch 3 is the global batch" in odd.stderr


def test_reconstruction_check_scores_a_perfect_autoencoder_as_perfect(tmp_path):
    from upscale_dit.toy.train import check_reconstruction

    class Identity:  # encode/decode as AutoencoderKLWan spells them, reconstructing exactly
        def encode(self, x):
            return type("Out", (), {"latent_dist": type("Dist", (), {"mode": lambda self: x})()})()

        def decode(self, z):
            return type("Out", (), {"sample": z})()

    image = tmp_path / "check.png"
    scores = check_reconstruction(Identity(), seed=0, clips=3, size=128, frames=5, device=torch.device("cpu"),
                                  image=image)
    assert scores["l1"] < 2 / 255  # only the uint8 → [-1, 1] → uint8 round trip
    assert scores["colour_match_frac"] == 1.0 and scores["shape_match_frac"] >= 0.9
    from PIL import Image

    grid = np.asarray(Image.open(image))
    assert grid.shape == (3 * 128, 4 * 128, 3)  # a row per clip: first frame, its reconstruction, last, its
    rendered, rebuilt = grid[:, 0:128].astype(int), grid[:, 128:256].astype(int)
    assert np.abs(rendered - rebuilt).max() <= 1 and rendered.std() > 10


def test_vae_starts_nearly_deterministic():
    """A fresh VAE's posterior would bury the mean in unit noise; training starts it at a std of ~0.05."""
    from upscale_dit.toy.train import start_nearly_deterministic

    vae = toy.build_toy_components(seed=0)["vae"]
    x = torch.rand(1, 3, 5, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        before = vae.encode(x).latent_dist.std.mean()
        start_nearly_deterministic(vae)
        after = vae.encode(x).latent_dist.std
    assert before > 0.5
    assert 0.03 < after.mean() < 0.08 and after.max() < 0.1


def test_trainer_rejects_bad_counts(capsys):
    with pytest.raises(SystemExit) as exc:
        train_main(["--out", "x", "--dit-steps", "0"])
    assert exc.value.code == 2
    assert "--dit-steps must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("scheduler_name", ["unipc", "euler"])
def test_the_engine_sampler_inverts_the_training_objective(scheduler_name):
    """A model that is exact under the trainer's convention (path, target, timestep scale) makes the engine's
    sampler land on the data: training and generation agree on what the network's output means."""
    from upscale_dit.engine.sampler import denoise
    from upscale_dit.engine.scheduling import build_scheduler
    from upscale_dit.toy.train import TIMESTEP_SCALE, noisy_latents

    generator = torch.Generator().manual_seed(0)
    target = torch.randn(1, 8, 5, 16, 16, generator=generator)

    class ExactVelocity(torch.nn.Module):
        dtype = torch.float32

        def forward(self, hidden_states, timestep, encoder_hidden_states, return_dict=False):
            sigma = (timestep.float() / TIMESTEP_SCALE).view(-1, 1, 1, 1, 1)
            # the trainer's path x = (1 - s) x0 + s n and target n - x0, solved for n - x0 given x and x0
            return ((hidden_states - target) / sigma,)

    noise = torch.randn(target.shape, generator=generator)
    half = torch.tensor([0.5])
    assert torch.allclose(ExactVelocity()(noisy_latents(target, noise, half), half * TIMESTEP_SCALE, None)[0],
                          noise - target, atol=1e-5)
    scheduler = build_scheduler(scheduler_name, shift=3.0, base_config=toy.TOY_SCHEDULER_CONFIG)
    scheduler.set_timesteps(12)
    out = denoise(ExactVelocity(), scheduler, noise, timesteps=scheduler.timesteps, cond=torch.zeros(1, 4, 64),
                  uncond=None, guidance=1.0)
    # UniPC hands the model integer timesteps (970 for sigma 0.9706): the oracle's sigma is off by < 0.1 %
    tolerance = 2e-3 if scheduler_name == "unipc" else 1e-4
    assert torch.linalg.vector_norm(out - target) / torch.linalg.vector_norm(target) < tolerance
