"""Every subpackage ships, and the presets are found without the source tree."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "upscale_dit").rglob("__init__.py")
    }
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"


def test_presets_are_mapped_into_the_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"]["upscale_dit.presets"] == "presets"
    shipped = {p.relative_to(ROOT / "presets").as_posix() for p in (ROOT / "presets").rglob("*.yaml")}
    patterns = config["package-data"]["upscale_dit.presets"]
    import fnmatch

    assert all(any(fnmatch.fnmatch(name, pat) and name.count("/") == pat.count("/") for pat in patterns)
               for name in shipped)
