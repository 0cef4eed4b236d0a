"""The run folder: recorded config, JSONL log, dataset report, atomic checkpoints and the adapter files.

Layout::

    RUN/config.yaml            resolved settings (what --resume continues with)
    RUN/data.json              images used, unreadable files, images too small
    RUN/log.jsonl              one line per step: stage, step, loss, lr, it/s, sigma
    RUN/cache/                 VAE latents and text embeddings (see cache.py)
    RUN/checkpoints/step-NNNNNNNN.pt   adapter, optimizer, schedule and RNG state
    RUN/stage1.safetensors, RUN/stage2.safetensors, RUN/relay.safetensors

Everything is written to a hidden temporary file and renamed, so a killed run never leaves a half file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
import yaml

from ..config.loader import read_yaml
from ..errors import ConfigError, OutputError
from ..video import partial_path, write_json_atomic

_CHECKPOINT = re.compile(r"^step-(\d{8})\.pt$")


class RunFolder:
    """Paths and file operations of one training run."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.config_path = self.root / "config.yaml"
        self.log_path = self.root / "log.jsonl"
        self.data_path = self.root / "data.json"
        self.cache_dir = self.root / "cache"
        self.checkpoint_dir = self.root / "checkpoints"
        self.relay_file = self.root / "relay.safetensors"

    def stage_file(self, stage: int) -> Path:
        return self.root / f"stage{stage}.safetensors"

    # ---- creation and resume ---------------------------------------------------------------------------------

    def check_new(self) -> None:
        """Refuse to start a new run on top of an existing one (before anything loads)."""
        if self.root.exists() and not self.root.is_dir():
            raise OutputError(f"--out {self.root} is a file; give a folder for the run")
        if self.root.is_dir() and any(self.root.iterdir()):
            raise OutputError(f"{self.root} already holds files; pass --resume to continue that run, or choose "
                              "another --out folder")
        blocking = next((p for p in self.root.parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise OutputError(f"cannot create run folder {self.root}: {blocking} is a file")

    def recorded_config(self) -> dict[str, Any]:
        if not self.config_path.is_file():
            raise ConfigError(f"--resume: {self.root} is not a train-relay run (no config.yaml); start a new run "
                              "without --resume")
        return read_yaml(self.config_path)

    def create(self, config: dict[str, Any]) -> None:
        for folder in (self.root, self.cache_dir, self.checkpoint_dir):
            folder.mkdir(parents=True, exist_ok=True)
        tmp = partial_path(self.config_path)
        tmp.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        os.replace(tmp, self.config_path)

    def write_data_report(self, report: dict[str, Any]) -> None:
        write_json_atomic(self.data_path, json.dumps(report, indent=2) + "\n")

    # ---- log ---------------------------------------------------------------------------------------------------

    def log(self, record: dict[str, Any]) -> None:
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def truncate_log(self, global_step: int) -> None:
        """Drop log lines after ``global_step`` (steps an interrupted run did after its last checkpoint)."""
        if not self.log_path.is_file():
            return
        kept = [line for line in self.log_path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("global_step", 0) <= global_step]
        write_json_atomic(self.log_path, "".join(line + "\n" for line in kept))

    # ---- checkpoints -----------------------------------------------------------------------------------------

    def checkpoints(self) -> list[tuple[int, Path]]:
        """``(global step, path)`` of every checkpoint, oldest first."""
        if not self.checkpoint_dir.is_dir():
            return []
        found = [(int(m[1]), p) for p in self.checkpoint_dir.iterdir() if (m := _CHECKPOINT.match(p.name))]
        return sorted(found)

    def save_checkpoint(self, global_step: int, state: dict[str, Any], *, keep: int) -> Path:
        path = self.checkpoint_dir / f"step-{global_step:08d}.pt"
        tmp = partial_path(path)
        try:
            torch.save(state, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        for _, old in self.checkpoints()[:-keep]:
            old.unlink(missing_ok=True)
        return path

    def load_latest(self) -> dict[str, Any] | None:
        found = self.checkpoints()
        if not found:
            return None
        return torch.load(found[-1][1], map_location="cpu", weights_only=True)
