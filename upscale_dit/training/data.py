"""Training images: find them and their captions, check them before any model loads, and crop them per stage.

Two layouts, as the common Wan trainers use them:

* a folder (searched recursively) of ``.jpg/.jpeg/.png/.webp`` files, each captioned by a same-stem ``.txt``
  (musubi-tuner, ai-toolkit, diffusion-pipe);
* a folder holding ``metadata.csv`` with an image column (``image``, or DiffSynth's ``video``) and a caption column
  (``prompt`` or ``caption``); paths are relative to the CSV.

Unreadable files are skipped and listed; images smaller than the largest stage size are skipped and counted
(an upscaled image teaches blur, not detail) unless upscaling is allowed. Each image is *cover*-resized
(bilinear, antialiased) and centre-cropped to exactly the stage size, as DiffSynth does.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
IMAGE_COLUMNS = ("image", "video")
CAPTION_COLUMNS = ("prompt", "caption")
METADATA_FILE = "metadata.csv"
_LISTED = 5  # file names quoted in a message before "and N more"


class DatasetError(ConfigError):
    """The training data cannot be used as given; the message names the files and the fix."""


@dataclass(frozen=True, slots=True)
class ImageItem:
    """One usable training image: where it is, its caption, and its size after EXIF rotation."""

    path: Path
    caption: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Dataset:
    """The usable images and what was skipped (recorded in the run folder)."""

    items: tuple[ImageItem, ...]
    unreadable: tuple[tuple[str, str], ...]  # (path, reason)
    too_small: tuple[str, ...]
    source: str

    def summary(self) -> dict[str, object]:
        return {"source": self.source, "images": [str(i.path) for i in self.items],
                "unreadable": [{"path": p, "reason": r} for p, r in self.unreadable], "too_small": list(self.too_small)}


def _listing(paths: list[str]) -> str:
    shown = ", ".join(paths[:_LISTED])
    return shown + (f" and {len(paths) - _LISTED} more" if len(paths) > _LISTED else "")


def probe_image(path: Path) -> tuple[int, int]:
    """``(width, height)`` after EXIF rotation, reading only the header; raises ``OSError``/``ValueError`` if bad."""
    from PIL import Image

    with Image.open(path) as image:
        image.verify()  # must come straight after open; the image cannot be used afterwards
    with Image.open(path) as image:
        width, height = image.size
        rotated = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # orientations that swap the sides
    return (height, width) if rotated else (width, height)


def _read_caption_file(image: Path) -> str | None:
    sidecar = image.with_suffix(".txt")
    if not sidecar.is_file():
        return None
    return sidecar.read_text(encoding="utf-8", errors="replace").strip() or None


def _folder_entries(folder: Path) -> list[tuple[Path, str | None]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return [(p, _read_caption_file(p)) for p in files]


def _csv_entries(csv_path: Path) -> list[tuple[Path, str | None]]:
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{(k or "").strip(): (v or "") for k, v in row.items()} for row in reader]
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {csv_path}: {exc}") from None
    image_col = next((c for c in IMAGE_COLUMNS if c in columns), None)
    caption_col = next((c for c in CAPTION_COLUMNS if c in columns), None)
    if image_col is None:
        raise DatasetError(f"{csv_path} has no image column: name one `image` (or `video`, as DiffSynth); "
                           f"found columns {', '.join(columns) or 'none'}")
    if caption_col is None:
        raise DatasetError(f"{csv_path} has no caption column: name one `prompt` or `caption`; "
                           f"found columns {', '.join(columns)}")
    return [(csv_path.parent / row[image_col].strip(), row[caption_col].strip() or None)
            for row in rows if row[image_col].strip()]


def collect_dataset(folder: str | Path, *, caption: str | None, min_size: tuple[int, int],
                    allow_upscale: bool = False) -> Dataset:
    """Find the training images in ``folder`` and check them; raises :class:`DatasetError` if none is usable.

    Args:
        folder: an image folder, or one holding ``metadata.csv``.
        caption: used for images without a caption; without it, uncaptioned images are an error.
        min_size: ``(width, height)`` an image must cover without upscaling (the largest stage size).
        allow_upscale: keep images smaller than ``min_size`` (they are upscaled when cropped).
    """
    if not str(folder):
        raise DatasetError("no training images given: pass --images DIR (a folder of images with .txt captions, "
                           "or one holding metadata.csv)")
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DatasetError(f"--images {root} is not a folder; give a folder of images or one holding {METADATA_FILE}")
    csv_path = root / METADATA_FILE
    entries = _csv_entries(csv_path) if csv_path.is_file() else _folder_entries(root)
    source = str(csv_path if csv_path.is_file() else root)
    if not entries:
        raise DatasetError(f"found no images in {source}: expected .jpg, .jpeg, .png or .webp files "
                           f"(searched recursively) or rows in {METADATA_FILE}")
    uncaptioned = [str(p) for p, c in entries if c is None]
    if uncaptioned and caption is None:
        raise DatasetError(f"{len(uncaptioned)} image(s) have no caption ({_listing(uncaptioned)}); add same-stem "
                           ".txt files (or fill the CSV's caption column) or pass --caption TEXT")
    items, unreadable, too_small = [], [], []
    min_w, min_h = min_size
    for path, text in entries:
        try:
            width, height = probe_image(path)
        except FileNotFoundError:
            unreadable.append((str(path), "file not found"))
            continue
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for a damaged file
            unreadable.append((str(path), f"{type(exc).__name__}: {exc}"))
            continue
        if (width < min_w or height < min_h) and not allow_upscale:
            too_small.append(str(path))
            continue
        items.append(ImageItem(path=path, caption=text if text is not None else str(caption), width=width, height=height))
    dataset = Dataset(items=tuple(items), unreadable=tuple(unreadable), too_small=tuple(too_small), source=source)
    if not items:
        reasons = []
        if unreadable:
            reasons.append(f"{len(unreadable)} unreadable ({_listing([p for p, _ in unreadable])})")
        if too_small:
            reasons.append(f"{len(too_small)} smaller than {min_w}x{min_h} (pass --allow-upscale to upscale them, "
                           "or lower --stage2-res)")
        raise DatasetError(f"no usable training image in {source}: {'; '.join(reasons)}")
    return dataset


def load_image(path: Path, width: int, height: int) -> np.ndarray:
    """Read ``path`` as RGB, cover-resize (bilinear) and centre-crop to exactly ``height x width``: uint8 [H, W, 3]."""
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    scale = max(width / image.width, height / image.height)
    new_w, new_h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    if (new_w, new_h) != image.size:
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return np.array(image.crop((left, top, left + width, top + height)), dtype=np.uint8)

