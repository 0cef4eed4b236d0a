"""Training data: both layouts, captions, and every bad-data case refused or skipped by its message."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.helpers import make_images
from upscale_dit.training.data import DatasetError, collect_dataset, load_image

MIN = (320, 192)  # the tiny model's stage-2 size


def test_folder_with_same_stem_captions_recursive(tmp_path):
    make_images(tmp_path / "a", 1)
    make_images(tmp_path / "a" / "deeper", 2, suffix=".webp")
    data = collect_dataset(tmp_path, caption=None, min_size=MIN)
    assert len(data.items) == 3
    assert {i.caption for i in data.items} == {"a pattern number 0", "a pattern number 1"}
    assert all(i.width == 340 and i.height == 200 for i in data.items)


def test_metadata_csv_with_diffsynth_video_column(tmp_path):
    make_images(tmp_path / "imgs", 2, captions=False)
    (tmp_path / "metadata.csv").write_text('video,prompt\nimgs/img0.png,"first, with a comma"\nimgs/img1.png,\n')
    data = collect_dataset(tmp_path, caption="fallback", min_size=MIN)
    assert [i.caption for i in data.items] == ["first, with a comma", "fallback"]
    assert data.source.endswith("metadata.csv")


def test_csv_without_image_column_names_the_columns(tmp_path):
    (tmp_path / "metadata.csv").write_text("file,prompt\na.png,x\n")
    with pytest.raises(DatasetError, match="no image column: name one `image`.*found columns file, prompt"):
        collect_dataset(tmp_path, caption=None, min_size=MIN)


def test_caption_flag_covers_uncaptioned_images_and_is_required_otherwise(tmp_path):
    make_images(tmp_path, 2, captions=False)
    with pytest.raises(DatasetError, match=r"2 image\(s\) have no caption .*pass --caption TEXT"):
        collect_dataset(tmp_path, caption=None, min_size=MIN)
    assert {i.caption for i in collect_dataset(tmp_path, caption="a photo", min_size=MIN).items} == {"a photo"}


def test_unreadable_files_are_skipped_and_listed(tmp_path):
    make_images(tmp_path, 1)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "broken.txt").write_text("x")
    data = collect_dataset(tmp_path, caption=None, min_size=MIN)
    assert len(data.items) == 1
    assert [p for p, _ in data.unreadable] == [str(tmp_path / "broken.jpg")]
    assert data.summary()["unreadable"][0]["reason"]


def test_small_images_skipped_with_a_count_unless_upscaling_allowed(tmp_path):
    make_images(tmp_path / "big", 1)
    make_images(tmp_path / "small", 2, size=(300, 200))
    data = collect_dataset(tmp_path, caption=None, min_size=MIN)
    assert len(data.items) == 1 and len(data.too_small) == 2
    assert len(collect_dataset(tmp_path, caption=None, min_size=MIN, allow_upscale=True).items) == 3


def test_nothing_usable_is_an_error_that_says_why(tmp_path):
    make_images(tmp_path, 2, size=(100, 60))
    with pytest.raises(DatasetError, match=r"no usable training image .*2 smaller than 320x192 \(pass --allow-upscale"):
        collect_dataset(tmp_path, caption=None, min_size=MIN)


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="found no images in"):
        collect_dataset(tmp_path, caption="x", min_size=MIN)
    with pytest.raises(DatasetError, match="is not a folder"):
        collect_dataset(tmp_path / "nope", caption="x", min_size=MIN)
    with pytest.raises(DatasetError, match="pass --images DIR"):
        collect_dataset("", caption="x", min_size=MIN)


def test_cover_resize_then_centre_crop(tmp_path):
    from PIL import Image

    # a 400x100 image: left half black, right half white, a red column in the exact centre
    rgb = np.zeros((100, 400, 3), np.uint8)
    rgb[:, 200:] = 255
    path = tmp_path / "wide.png"
    Image.fromarray(rgb).save(path)
    out = load_image(path, 100, 100)  # cover: scale 1 (height fits), crop the middle 100 columns
    assert out.shape == (100, 100, 3) and out.dtype == np.uint8
    assert (out[:, :50] == 0).all() and (out[:, 50:] == 255).all()
    tall = load_image(path, 64, 32)  # cover: 400x100 -> 128x32, centre 64 columns
    assert tall.shape == (32, 64, 3)


def test_new_run_folder_may_have_missing_parents_but_not_a_file_in_the_way(tmp_path):
    from upscale_dit.errors import OutputError
    from upscale_dit.training.checkpoint import RunFolder

    RunFolder(tmp_path / "runs" / "deep" / "a").check_new()  # parents are created when the run starts
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"cannot create run folder .*/file/a: .*/file is a file"):
        RunFolder(tmp_path / "file" / "a").check_new()
