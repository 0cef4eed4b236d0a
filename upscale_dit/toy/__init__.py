"""Toy video world for training a tiny video DiT offline and benchmarking high-res output.

``world`` renders procedural scenes (one textured shape on a dark background) at any
resolution from a seed and captions them from a template; ``detect`` scores videos
against captions (repetition, scale, colour/shape, motion, jerk, detail).  numpy only:
importing this package never imports torch or diffusers.
"""

from .components import label_components
from .detect import (
    COLOUR_NAMES,
    DEFAULT_MAX_DIST,
    DEFAULT_MIN_AREA_FRAC,
    DetectedObject,
    VideoReport,
    classify_shape,
    detail_ratio,
    detect_objects,
    evaluate_video,
    high_frequency_energy,
    radial_harmonics,
    segment_colours,
    trajectory_jerk,
)
from .world import (
    BACKGROUNDS,
    GRADIENTS,
    MOTIONS,
    OBJECT_COLOURS,
    SHAPES,
    SIZE_CLASSES,
    TEXTURES,
    TINT,
    VOCABULARY,
    CaptionAttributes,
    SceneSpec,
    parse_caption,
    render,
    mark_colour,
    sample_scene,
    shape_area_frac,
    size_class,
)

__all__ = [
    "BACKGROUNDS",
    "COLOUR_NAMES",
    "DEFAULT_MAX_DIST",
    "DEFAULT_MIN_AREA_FRAC",
    "GRADIENTS",
    "MOTIONS",
    "OBJECT_COLOURS",
    "SHAPES",
    "SIZE_CLASSES",
    "TEXTURES",
    "TINT",
    "VOCABULARY",
    "CaptionAttributes",
    "DetectedObject",
    "SceneSpec",
    "VideoReport",
    "classify_shape",
    "detail_ratio",
    "detect_objects",
    "evaluate_video",
    "high_frequency_energy",
    "label_components",
    "mark_colour",
    "parse_caption",
    "radial_harmonics",
    "render",
    "sample_scene",
    "segment_colours",
    "shape_area_frac",
    "size_class",
    "trajectory_jerk",
]
