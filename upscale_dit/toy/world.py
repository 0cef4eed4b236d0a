"""A procedural toy video world: one textured shape on a dark background.

No real video-model weights are available offline, so a tiny video model is trained on
this world instead, and the world doubles as ground truth for the high-resolution
benchmark.  Every scene is a frozen :class:`SceneSpec` that can be rendered at *any*
resolution: all geometry lives in normalised units (frame heights), edges are
antialiased and textures are defined in object coordinates, so a 4x render is the same
scene with more detail, and box-downscaling it approximately gives the native render.

Coordinates: ``x`` is a fraction of the frame width, ``y`` a fraction of the frame
height, y points down.  Internally positions are in *frame heights* (so shapes are not
stretched by the aspect ratio).  Angles grow clockwise on screen.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RGB = tuple[int, int, int]

# --------------------------------------------------------------------------- vocabulary

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "hexagon")
"""Shape names; all are regular, so centroid == centre of the circumscribed circle."""

OBJECT_COLOURS: dict[str, RGB] = {
    "red": (230, 30, 40),
    "green": (40, 200, 60),
    "blue": (50, 100, 245),
    "yellow": (250, 230, 40),
    "pink": (255, 110, 190),
    "orange": (255, 135, 0),
    "purple": (150, 50, 230),
    "cyan": (30, 220, 230),
}
"""Bright, saturated, well-separated object colours (RGB).  No white: texture marks are
tints toward white, which white could not show."""

TINT = 0.3
"""Texture marks are the object colour moved this far toward white.

Marks are lighter, not darker, so that an antialiased edge (object mixed with a dark
background) never looks like a mark: coverage estimates stay unbiased.  Every
colour-to-tint segment stays >= 63 RGB units from every other one and >= 139 from the
background gradients."""

BACKGROUNDS: dict[str, tuple[RGB, RGB]] = {
    "dark blue": ((15, 20, 80), (5, 8, 38)),
    "black": ((0, 0, 0), (40, 40, 40)),
    "dark green": ((10, 60, 25), (2, 26, 8)),
    "dark gray": ((62, 62, 66), (28, 28, 30)),
}
"""Dark backgrounds as (start, end) colours; plain ones use only the start colour."""

TEXTURES: tuple[str, ...] = ("plain", "stripes", "dots", "checks")
TEXTURE_WORDS: dict[str, str] = {
    "plain": "plain",
    "stripes": "striped",
    "dots": "dotted",
    "checks": "checkered",
}
TEXTURE_PERIOD = 0.25
"""Texture period as a fraction of the object size, so detail scales with resolution."""

MOTIONS: tuple[str, ...] = (
    "static",
    "left",
    "right",
    "up",
    "down",
    "clockwise",
    "counterclockwise",
)
MOTION_PHRASES: dict[str, str] = {
    "static": "standing still",
    "left": "moving left",
    "right": "moving right",
    "up": "moving up",
    "down": "moving down",
    "clockwise": "rotating clockwise",
    "counterclockwise": "rotating counterclockwise",
}
TRANSLATIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}
"""Unit velocity (x, y) of each translating motion, y down."""

GRADIENTS: tuple[str, ...] = ("none", "vertical", "horizontal")

SIZE_CLASSES: dict[str, float] = {"small": 0.24, "medium": 0.34, "large": 0.46}
"""Nominal object size (circumscribed diameter / frame height) for each caption word."""

SIZE_JITTER = 0.07
"""Sampled sizes are nominal * U(1 - jitter, 1 + jitter); classes never overlap."""

SHAPE_AREA_FACTOR: dict[str, float] = {
    "circle": math.pi,
    "square": 2.0,
    "triangle": 3.0 * math.sqrt(3.0) / 4.0,
    "hexagon": 3.0 * math.sqrt(3.0) / 2.0,
}
"""Area of each shape divided by its squared circumradius."""

_POLYGON_NORMALS: dict[str, tuple[float, ...]] = {
    # Outward edge-normal angles (degrees, y down) of the upright shape.
    "square": (0.0, 90.0, 180.0, 270.0),
    "triangle": (90.0, 210.0, 330.0),  # flat bottom, apex up
    "hexagon": (0.0, 60.0, 120.0, 180.0, 240.0, 300.0),
}


def _caption_words() -> tuple[str, ...]:
    words = {"a", "on", "background", "gradient"}
    for phrase in (
        *SHAPES,
        *OBJECT_COLOURS,
        *TEXTURE_WORDS.values(),
        *MOTION_PHRASES.values(),
        *BACKGROUNDS,
        *(g for g in GRADIENTS if g != "none"),
        *SIZE_CLASSES,
    ):
        words.update(phrase.split())
    return tuple(sorted(words))


VOCABULARY: tuple[str, ...] = _caption_words()
"""Every word a caption can contain (sorted); a tokenizer is built over this set."""

# --------------------------------------------------------------------------- scene specs


def size_class(size: float) -> str:
    """The caption word for an object size (nearest nominal size in log space)."""
    return min(SIZE_CLASSES, key=lambda k: abs(math.log(size / SIZE_CLASSES[k])))


@dataclass(frozen=True)
class CaptionAttributes:
    """What a caption says about a scene (the discrete part of a :class:`SceneSpec`)."""

    shape: str
    colour: str
    texture: str
    motion: str
    background: str
    gradient: str
    size: str

    def caption(self) -> str:
        """The one canonical template, e.g. ``a small red striped circle moving left on
        a dark blue background``."""
        bg = self.background
        if self.gradient != "none":
            bg = f"{bg} {self.gradient} gradient"
        return (
            f"a {self.size} {self.colour} {TEXTURE_WORDS[self.texture]} {self.shape} "
            f"{MOTION_PHRASES[self.motion]} on a {bg} background"
        )

    @property
    def nominal_size(self) -> float:
        """Object size (circumscribed diameter / frame height) the size word stands for."""
        return SIZE_CLASSES[self.size]

    def expected_area_frac(self, aspect: float = 1.0) -> float:
        """Object area / frame area implied by the caption (nominal size)."""
        return shape_area_frac(self.shape, self.nominal_size, aspect)


def shape_area_frac(shape: str, size: float, aspect: float = 1.0) -> float:
    """Analytic area fraction of a shape of the given size in a frame of ``aspect`` = W/H."""
    return SHAPE_AREA_FACTOR[shape] * (size / 2.0) ** 2 / aspect


@dataclass(frozen=True)
class SceneSpec:
    """One toy scene, fully determining every frame at any resolution.

    ``size`` is the diameter of the shape's circumscribed circle as a fraction of frame
    height; ``x``/``y`` the centre at t=0 as fractions of width/height; ``speed`` the
    translation speed in frame heights per second (direction from ``motion``);
    ``angular_speed`` the rotation rate in radians per second (sense from ``motion``);
    ``angle`` the initial rotation (radians, clockwise); ``seed`` records provenance.
    """

    shape: str
    colour: str
    texture: str = "plain"
    motion: str = "static"
    background: str = "black"
    gradient: str = "none"
    size: float = 0.34
    x: float = 0.5
    y: float = 0.5
    speed: float = 0.0
    angular_speed: float = 0.0
    angle: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for value, allowed, what in (
            (self.shape, SHAPES, "shape"),
            (self.colour, tuple(OBJECT_COLOURS), "colour"),
            (self.texture, TEXTURES, "texture"),
            (self.motion, MOTIONS, "motion"),
            (self.background, tuple(BACKGROUNDS), "background"),
            (self.gradient, GRADIENTS, "gradient"),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r}; expected one of {allowed}")
        if not self.size > 0:
            raise ValueError(f"size must be positive, got {self.size}")
        if self.speed < 0 or self.angular_speed < 0:
            raise ValueError("speed and angular_speed are magnitudes; motion sets the sign")

    def attributes(self) -> CaptionAttributes:
        """The caption-level (discrete) attributes of this scene."""
        return CaptionAttributes(
            shape=self.shape,
            colour=self.colour,
            texture=self.texture,
            motion=self.motion,
            background=self.background,
            gradient=self.gradient,
            size=size_class(self.size),
        )

    def caption(self) -> str:
        """The scene's caption from the canonical template."""
        return self.attributes().caption()

    def velocity(self) -> tuple[float, float]:
        """Centre velocity (vx, vy) in frame heights per second (y down)."""
        ux, uy = TRANSLATIONS.get(self.motion, (0.0, 0.0))
        return ux * self.speed, uy * self.speed

    def angle_at(self, t: float) -> float:
        """Rotation (radians, clockwise on screen) at time ``t`` seconds."""
        sense = {"clockwise": 1.0, "counterclockwise": -1.0}.get(self.motion, 0.0)
        return self.angle + sense * self.angular_speed * t

    def centre_at(self, t: float, aspect: float = 1.0) -> tuple[float, float]:
        """Centre at time ``t`` seconds as (fraction of width, fraction of height)."""
        vx, vy = self.velocity()
        return self.x + vx * t / aspect, self.y + vy * t

    def area_frac(self, aspect: float = 1.0) -> float:
        """Analytic object area / frame area (for a frame with ``aspect`` = W/H)."""
        return shape_area_frac(self.shape, self.size, aspect)


# --------------------------------------------------------------------------- captions

_CAPTION_RE = re.compile(
    r"a (?P<size>{size}) (?P<colour>{colour}) (?P<texture>{texture}) (?P<shape>{shape}) "
    r"(?P<motion>{motion}) on a (?P<background>{background})"
    r"(?: (?P<gradient>vertical|horizontal) gradient)? background".format(
        size="|".join(SIZE_CLASSES),
        colour="|".join(OBJECT_COLOURS),
        texture="|".join(TEXTURE_WORDS.values()),
        shape="|".join(SHAPES),
        motion="|".join(MOTION_PHRASES.values()),
        background="|".join(BACKGROUNDS),
    )
)


def parse_caption(text: str) -> CaptionAttributes:
    """Recover the attributes from a template caption (case/whitespace/final '.' free).

    The benchmark uses this to know what a prompt asks for; raises ``ValueError`` on
    text that the template did not produce.
    """
    norm = " ".join(text.lower().strip().rstrip(".").split())
    m = _CAPTION_RE.fullmatch(norm)
    if m is None:
        raise ValueError(f"not a toy-world caption: {text!r}")
    texture = {w: k for k, w in TEXTURE_WORDS.items()}[m["texture"]]
    motion = {p: k for k, p in MOTION_PHRASES.items()}[m["motion"]]
    return CaptionAttributes(
        shape=m["shape"],
        colour=m["colour"],
        texture=texture,
        motion=motion,
        background=m["background"],
        gradient=m["gradient"] or "none",
        size=m["size"],
    )


# --------------------------------------------------------------------------- sampling

MARGIN = 0.03
"""Minimum gap (frame heights) kept between the object's circumscribed circle and the
frame edge during the sampled clip."""

SPEED_RANGE: tuple[float, float] = (0.08, 0.2)
"""Translation speeds sampled (frame heights per second) before capping to fit the clip."""

ANGULAR_SPEED_RANGE: tuple[float, float] = (0.6, 1.6)
"""Rotation rates sampled (radians per second)."""


def sample_scene(
    seed: int | np.random.Generator,
    *,
    aspect: float = 1.0,
    clip_seconds: float = 2.0,
    shapes: Sequence[str] = SHAPES,
    colours: Sequence[str] = tuple(OBJECT_COLOURS),
    textures: Sequence[str] = TEXTURES,
    motions: Sequence[str] = MOTIONS,
    backgrounds: Sequence[str] = tuple(BACKGROUNDS),
    gradients: Sequence[str] = GRADIENTS,
    sizes: Sequence[str] = tuple(SIZE_CLASSES),
) -> SceneSpec:
    """Draw a random scene that stays inside an ``aspect`` (W/H) frame for ``clip_seconds``.

    ``clip_seconds`` should cover the clip, ``(frames - 1) / fps`` (2 s = 33 frames at
    16 fps).  A generator is turned into an int seed first, so every scene is
    reproducible from ``scene.seed`` alone.  Rotating plain circles would look static,
    so they get one of the allowed patterned textures instead.  Translation speeds are
    capped so the object fits; in narrow portrait frames large objects barely move.
    """
    if isinstance(seed, np.random.Generator):
        seed = int(seed.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)

    def pick(options: Sequence[str]) -> str:
        return options[int(rng.integers(len(options)))]

    shape, colour, texture, motion = pick(shapes), pick(colours), pick(textures), pick(motions)
    background, gradient, size_word = pick(backgrounds), pick(gradients), pick(sizes)
    size = SIZE_CLASSES[size_word] * float(rng.uniform(1.0 - SIZE_JITTER, 1.0 + SIZE_JITTER))
    radius = size / 2.0
    extent = (aspect, 1.0)  # frame extent in heights along x and y
    lo = [MARGIN + radius] * 2
    hi = [e - MARGIN - radius for e in extent]
    if hi[0] < lo[0] or hi[1] < lo[1]:
        raise ValueError(f"a {size_word} object does not fit a frame of aspect {aspect}")

    speed = angular_speed = angle = 0.0
    centre = [0.0, 0.0]
    if motion in TRANSLATIONS:
        ux, uy = TRANSLATIONS[motion]
        axis = 0 if ux else 1
        sign = ux or uy
        room = hi[axis] - lo[axis]
        speed = min(float(rng.uniform(*SPEED_RANGE)), 0.999 * room / clip_seconds)
        travel = speed * clip_seconds
        if sign > 0:
            centre[axis] = float(rng.uniform(lo[axis], hi[axis] - travel))
        else:
            centre[axis] = float(rng.uniform(lo[axis] + travel, hi[axis]))
        other = 1 - axis
        centre[other] = float(rng.uniform(lo[other], hi[other]))
    else:
        centre = [float(rng.uniform(lo[i], hi[i])) for i in range(2)]
        if motion in ("clockwise", "counterclockwise"):
            angular_speed = float(rng.uniform(*ANGULAR_SPEED_RANGE))
            angle = float(rng.uniform(0.0, 2.0 * math.pi))
            patterned = [t for t in textures if t != "plain"]
            if shape == "circle" and texture == "plain" and patterned:
                texture = pick(patterned)
    return SceneSpec(
        shape=shape,
        colour=colour,
        texture=texture,
        motion=motion,
        background=background,
        gradient=gradient,
        size=size,
        x=centre[0] / aspect,
        y=centre[1],
        speed=speed,
        angular_speed=angular_speed,
        angle=angle,
        seed=seed,
    )


# --------------------------------------------------------------------------- rendering


def mark_colour(colour: str) -> np.ndarray:
    """The texture-mark colour (float RGB) of a palette colour: a tint toward white."""
    base = np.asarray(OBJECT_COLOURS[colour], dtype=np.float64)
    return base + TINT * (255.0 - base)


def _background(scene: SceneSpec, height: int, width: int) -> np.ndarray:
    """Float (H, W, 3) background; a linear gradient is exact at pixel centres."""
    c0, c1 = (np.asarray(c, dtype=np.float64) for c in BACKGROUNDS[scene.background])
    if scene.gradient == "none":
        return np.broadcast_to(c0, (height, width, 3)).copy()
    if scene.gradient == "vertical":
        t = ((np.arange(height) + 0.5) / height)[:, None, None]
    else:
        t = ((np.arange(width) + 0.5) / width)[None, :, None]
    return np.broadcast_to(c0 + (c1 - c0) * t, (height, width, 3)).copy()


def _coverage(signed_dist: np.ndarray) -> np.ndarray:
    """Linear-ramp coverage from a signed distance in (sub)pixel units (<0 inside)."""
    return np.clip(0.5 - signed_dist, 0.0, 1.0)


def _shape_sdf(shape: str, lx: np.ndarray, ly: np.ndarray) -> np.ndarray:
    """Signed distance (units of circumradius) to an upright shape of circumradius 1."""
    if shape == "circle":
        return np.hypot(lx, ly) - 1.0
    normals = _POLYGON_NORMALS[shape]
    apothem = math.cos(math.pi / len(normals))
    d = None
    for deg in normals:
        a = math.radians(deg)
        proj = lx * math.cos(a) + ly * math.sin(a)
        d = proj if d is None else np.maximum(d, proj)
    return d - apothem


def _band(coord: np.ndarray, period: float, scale: float) -> np.ndarray:
    """Antialiased coverage of alternate bands ``[0, period/2)`` along one coordinate."""
    w = np.mod(coord / period, 1.0)
    inside = w < 0.5
    dist = np.where(inside, -np.minimum(w, 0.5 - w), np.minimum(w - 0.5, 1.0 - w)) * period
    return _coverage(dist * scale)


def _texture(texture: str, lx: np.ndarray, ly: np.ndarray, scale: float) -> np.ndarray | None:
    """Mark coverage (0 = object colour, 1 = tint) in object units; ``scale`` converts
    object units to subpixels."""
    period = 2.0 * TEXTURE_PERIOD  # object units are circumradii: size = 2
    if texture == "plain":
        return None
    if texture == "stripes":
        return _band(ly + period / 4.0, period, scale)
    if texture == "checks":
        a = _band(lx + period / 4.0, period, scale)
        b = _band(ly + period / 4.0, period, scale)
        return a * (1.0 - b) + b * (1.0 - a)
    # dots: one dot of radius 0.3 * period per cell, centred on the object centre
    qx = np.mod(lx / period + 0.5, 1.0) - 0.5
    qy = np.mod(ly / period + 0.5, 1.0) - 0.5
    return _coverage((np.hypot(qx, qy) - 0.3) * period * scale)


_BAND_SAMPLES = 1 << 20
"""Subsamples evaluated at once; large renders go in row bands to bound memory."""


def _draw_object(canvas: np.ndarray, scene: SceneSpec, t: float, supersample: int) -> None:
    """Composite one object at time ``t`` onto a float canvas (in place)."""
    height, width = canvas.shape[:2]
    aspect = width / height
    fx, fy = scene.centre_at(t, aspect)
    cx, cy = fx * aspect, fy  # frame heights
    pad = scene.size / 2.0 + 2.0 / height
    c0, c1 = max(0, math.floor((cx - pad) * height)), min(width, math.ceil((cx + pad) * height))
    r0, r1 = max(0, math.floor((cy - pad) * height)), min(height, math.ceil((cy + pad) * height))
    if c1 <= c0 or r1 <= r0:
        return
    band = max(1, _BAND_SAMPLES // (supersample**2 * (c1 - c0)))
    for top in range(r0, r1, band):
        bottom = min(top + band, r1)
        _draw_band(canvas[top:bottom, c0:c1], scene, t, supersample, (top, c0), (cx, cy), height)


def _draw_band(
    region: np.ndarray,
    scene: SceneSpec,
    t: float,
    s: int,
    corner: tuple[int, int],
    centre: tuple[float, float],
    height: int,
) -> None:
    """Composite the object over ``region``, a view of a ``height``-row canvas whose
    top-left pixel is ``corner`` (row, col), with ``s`` x ``s`` subsamples per pixel;
    ``centre`` is the object centre in frame heights."""
    h, w = region.shape[:2]
    top, left = corner
    sub = s * height  # subpixels per frame height
    radius = scene.size / 2.0
    dx = (np.arange(left * s, (left + w) * s) + 0.5)[None, :] / sub - centre[0]
    dy = (np.arange(top * s, (top + h) * s) + 0.5)[:, None] / sub - centre[1]
    th = scene.angle_at(t)
    cos, sin = math.cos(th), math.sin(th)
    lx = (cos * dx + sin * dy) / radius  # object frame: rotate by -angle
    ly = (-sin * dx + cos * dy) / radius
    scale = radius * sub  # object units -> subpixels
    alpha = _coverage(_shape_sdf(scene.shape, lx, ly) * scale)
    base = np.asarray(OBJECT_COLOURS[scene.colour], dtype=np.float64)
    marks = _texture(scene.texture, lx, ly, scale)
    if marks is None:
        premult = alpha[..., None] * base
    else:
        colour = base + (mark_colour(scene.colour) - base) * marks[..., None]
        premult = alpha[..., None] * colour
    alpha = alpha.reshape(h, s, w, s).mean(axis=(1, 3))
    premult = premult.reshape(h, s, w, s, 3).mean(axis=(1, 3))
    region *= 1.0 - alpha[..., None]
    region += premult


def render(
    scene: SceneSpec | Sequence[SceneSpec],
    *,
    height: int,
    width: int,
    frames: int,
    fps: float = 16.0,
    start_frame: int = 0,
    supersample: int = 2,
) -> np.ndarray:
    """Render a scene as uint8 ``(frames, height, width, 3)`` RGB at any resolution.

    Several scenes may be passed to draw several objects (painted in order over the first
    scene's background), e.g. to fabricate a repetition failure.  Frame ``f`` shows time
    ``(start_frame + f) / fps`` seconds.  Coverage is analytic (linear ramp over one
    subpixel) on a ``supersample`` x ``supersample`` grid per pixel.
    """
    scenes = [scene] if isinstance(scene, SceneSpec) else list(scene)
    if not scenes:
        raise ValueError("need at least one scene")
    if height < 1 or width < 1 or frames < 1 or supersample < 1:
        raise ValueError("height, width, frames and supersample must be positive")
    background = _background(scenes[0], height, width)
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for f in range(frames):
        canvas = background.copy()
        t = (start_frame + f) / fps
        for obj in scenes:
            _draw_object(canvas, obj, t, supersample)
        np.clip(np.rint(canvas), 0, 255, out=canvas)
        out[f] = canvas.astype(np.uint8)
    return out
