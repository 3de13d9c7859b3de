"""Drawing the synthetic concepts: names, power-law sizes, captions, images, JPEG and tar encoding."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from dynamics.storage import objects as storage

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "blue": (40, 80, 230),
    "green": (40, 180, 60),
    "yellow": (235, 215, 40),
    "purple": (150, 50, 200),
    "orange": (245, 140, 20),
    "teal": (20, 170, 170),
    "pink": (245, 120, 190),
}
SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "ring",
    "cross",
    "stripes",
    "checkerboard",
    "diamond",
)
# "{a}" is the name with its article ("an orange ring"), "{name}" the bare name.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of {a}",
    "{name} on a plain background",
    "{a}",
    "a picture showing {a}",
    "an image of {a}",
    "a small {name}",
    "a drawing of {a}",
    "close-up of {a}",
)
EVAL_TEMPLATES: tuple[str, ...] = ("a photo of a {c}.", "a {c}.", "an image of a {c}.")
MAX_CONCEPTS = len(COLOURS) * len(SHAPES)
JPEG_QUALITY = 90

# Independent random streams, so changing e.g. the eval size leaves the train shards unchanged.
STREAM_ORDER, STREAM_TRAIN, STREAM_EVAL, STREAM_TEST = range(4)


# ---------------------------------------------------------------- concepts and sizes


def concept_names(n_concepts: int) -> list[str]:
    """Names of the first ``n_concepts`` concepts ("red circle", "blue square", ...), all distinct."""
    if not 1 <= n_concepts <= MAX_CONCEPTS:
        raise ValueError(f"n_concepts must be in 1..{MAX_CONCEPTS}, got {n_concepts}")
    colours = list(COLOURS)
    # (i % 8, (i + i // 8) % 8) never repeats a pair for i < 64, and neighbours differ in both.
    return [f"{colours[i % 8]} {SHAPES[(i + i // 8) % 8]}" for i in range(n_concepts)]


def concept_sizes(
    n_total: int, n_concepts: int, *, exponent: float = 3.0, offset: float = 5.0, min_size: int = 3
) -> np.ndarray:
    """Power-law sizes ``∝ (rank + offset)^-exponent`` summing exactly to ``n_total``, largest first."""
    if n_total < n_concepts * min_size:
        raise ValueError(f"n_total={n_total} is too small for {n_concepts} concepts of >= {min_size}")
    weights = (np.arange(n_concepts) + offset) ** -exponent
    spare = n_total - n_concepts * min_size
    raw = spare * weights / weights.sum()
    sizes = np.floor(raw).astype(np.int64)
    # Largest remainders get the leftover units, so the total is exact and the order kept.
    leftover = spare - int(sizes.sum())
    sizes[np.argsort(-(raw - sizes), kind="stable")[:leftover]] += 1
    return sizes + min_size


def caption_for(name: str, template: int) -> str:
    """Caption ``template`` (an index into CAPTION_TEMPLATES) filled with concept ``name``."""
    article = "an" if name[0] in "aeiou" else "a"
    return CAPTION_TEMPLATES[template].format(name=name, a=f"{article} {name}")


# ---------------------------------------------------------------- rendering


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    values = np.clip(np.asarray(rgb) + rng.integers(-amount, amount + 1, size=3), 0, 255)
    return (int(values[0]), int(values[1]), int(values[2]))


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    base = rng.integers(40, 200)
    tint = rng.integers(-15, 16, size=3)
    noise = rng.normal(0.0, 12.0, size=(size, size, 3))
    pixels = np.clip(base + tint + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def _polygon(cx: float, cy: float, r: float, n: int, angle: float) -> list[tuple[float, float]]:
    thetas = angle + 2 * np.pi * np.arange(n) / n
    return [(cx + r * float(np.cos(t)), cy + r * float(np.sin(t))) for t in thetas]


def _draw_texture(
    draw: ImageDraw.ImageDraw, shape: str, colour: tuple[int, int, int], size: int, rng: np.random.Generator
) -> None:
    period = int(rng.integers(max(4, size // 10), max(6, size // 4)))
    phase = int(rng.integers(0, period))
    width = max(2, period // 2)
    for start in range(-period + phase, size, period):
        if shape == "stripes":
            draw.rectangle([start, 0, start + width - 1, size], fill=colour)
            continue
        for row, top in enumerate(range(-period + phase, size, period)):
            if (row + start // period) % 2 == 0:
                draw.rectangle([start, top, start + period - 1, top + period - 1], fill=colour)


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, colour: tuple[int, int, int], size: int, rng: np.random.Generator
) -> None:
    r = size * float(rng.uniform(0.18, 0.34))
    cx, cy = (size * float(rng.uniform(0.35, 0.65)) for _ in range(2))
    angle = float(rng.uniform(0, 2 * np.pi))
    box = [cx - r, cy - r, cx + r, cy + r]
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(2, int(r / 3)))
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, r * 1.3, 4, angle), fill=colour)
    elif shape == "diamond":
        # Upright and elongated, so no rotation of a square looks like it.
        draw.polygon([(cx, cy - 1.4 * r), (cx + 0.8 * r, cy), (cx, cy + 1.4 * r), (cx - 0.8 * r, cy)], fill=colour)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, r * 1.3, 3, angle), fill=colour)
    elif shape == "cross":
        arm = max(2, int(r / 2.5))
        draw.rectangle([cx - r, cy - arm, cx + r, cy + arm], fill=colour)
        draw.rectangle([cx - arm, cy - r, cx + arm, cy + r], fill=colour)


def render_concept(name: str, rng: np.random.Generator, size: int) -> Image.Image:
    """One random image of concept ``name`` ("<colour> <shape>") at ``size`` x ``size`` pixels."""
    colour_name, shape = name.split(" ", 1)
    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    colour = _jitter(rng, COLOURS[colour_name], 25)
    if shape in ("stripes", "checkerboard"):
        _draw_texture(draw, shape, colour, size, rng)
    else:
        _draw_shape(draw, shape, colour, size, rng)
    return img


def encode_jpeg(img: Image.Image) -> bytes:
    """JPEG bytes of ``img`` (fixed quality, no metadata, so the bytes are reproducible)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


# ---------------------------------------------------------------- tar shards


def tar_bytes(members: Sequence[tuple[str, bytes]]) -> bytes:
    """An uncompressed tar of ``(name, data)`` members with fixed metadata (byte-reproducible)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def out_root(out_dir: str) -> str:
    return out_dir.rstrip("/") if storage.is_s3(out_dir) else os.path.abspath(out_dir)


def brace(width: int, n: int) -> str:
    return f"{{{0:0{width}d}..{n - 1:0{width}d}}}"


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()


