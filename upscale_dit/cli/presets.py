"""`udit presets`: what the built-in model and resolution presets are."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..config import get_model_preset, model_presets, resolve_size
from ..config.presets import named_resolutions
from .app import app, handles_errors


@app.command("presets")
@handles_errors
def list_presets() -> None:
    """List the built-in models and named resolutions."""
    console = Console()
    models = Table("model", "weights", "native", "fps", "frames", "shift", "window (tokens)", title="Models")
    for preset in model_presets().values():
        models.add_row(preset.name, preset.source, f"{preset.native_width}x{preset.native_height}", str(preset.fps),
                       str(preset.frames), str(preset.shift), f"{preset.window_rows}x{preset.window_cols}")
    console.print(models)
    reference = get_model_preset("wan2.1-t2v-1.3b")
    sizes = Table("resolution", "writes (16:9)", "generates at", title="Resolutions (also 2x/3x/4x, native, WxH)")
    for name in named_resolutions():
        size = resolve_size(name, None, reference)
        sizes.add_row(name, f"{size.out_width}x{size.out_height}", f"{size.gen_width}x{size.gen_height}")
    console.print(sizes)
