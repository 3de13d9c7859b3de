"""Synthetic long-tailed image-text data for the quickstart, the tests and the benchmarks.

``generate_demo_data`` writes a small dataset in the layouts real tools expect:

- training shards as img2dataset writes them (``{key}.jpg``, ``{key}.txt``, ``{key}.json``);
- a balanced held-out set as clip_benchmark's webdataset zero-shot sets (``{key}.jpg`` +
  ``{key}.cls``, ``classnames.txt``, ``zeroshot_classification_templates.txt``);
- ``manifest.json`` with the brace patterns and class frequencies.

Each concept is a colour + shape/texture family ("red ring", "teal stripes") drawn with random
position, size, rotation, colour jitter and background noise, so a tiny CLIP learns it in minutes
on a CPU. Concept sizes follow a (Zipf-Mandelbrot) power law: a few head concepts hold hundreds
of samples, the tail a handful -- the imbalance DynamiCS is meant to correct. Everything is
deterministic in ``seed``: same seed, byte-identical shards.

``write_test_shards`` writes tiny shards with known defects for the stages' tests.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from dynamics import storage
from dynamics.layout import join
from dynamics.storage import StorageConfig

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
_STREAM_ORDER, _STREAM_TRAIN, _STREAM_EVAL, _STREAM_TEST = range(4)


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


def _root(out_dir: str) -> str:
    return out_dir.rstrip("/") if storage.is_s3(out_dir) else os.path.abspath(out_dir)


def _brace(width: int, n: int) -> str:
    return f"{{{0:0{width}d}..{n - 1:0{width}d}}}"


@dataclass(frozen=True)
class _TrainSample:
    key: str
    concept: int
    caption: str
    jpeg: bytes


def _train_members(s: _TrainSample, names: list[str], size: int) -> list[tuple[str, bytes]]:
    meta = {
        "key": s.key,
        "caption": s.caption,
        "concept": s.concept,
        "class": s.concept,
        "concept_name": names[s.concept],
        "width": size,
        "height": size,
        "status": "success",
    }
    return [
        (f"{s.key}.jpg", s.jpeg),
        (f"{s.key}.txt", s.caption.encode()),
        (f"{s.key}.json", _json_bytes(meta)),
    ]


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()


def _make_train(
    seed: int, names: list[str], sizes: np.ndarray, shard_size: int, image_size: int
) -> Iterator[tuple[int, list[_TrainSample]]]:
    rng = np.random.default_rng([seed, _STREAM_TRAIN])
    labels = rng.permutation(np.repeat(np.arange(len(names)), sizes))
    for shard_start in range(0, len(labels), shard_size):
        shard = shard_start // shard_size
        samples = []
        for i, concept in enumerate(labels[shard_start : shard_start + shard_size]):
            name = names[int(concept)]
            caption = caption_for(name, int(rng.integers(len(CAPTION_TEMPLATES))))
            jpeg = encode_jpeg(render_concept(name, rng, image_size))
            samples.append(_TrainSample(f"{shard:05d}{i:04d}", int(concept), caption, jpeg))
        yield shard, samples


def _write_train(
    root: str,
    seed: int,
    names: list[str],
    sizes: np.ndarray,
    shard_size: int,
    image_size: int,
    cfg: StorageConfig | None,
) -> dict[str, Any]:
    n_shards = 0
    for shard, samples in _make_train(seed, names, sizes, shard_size, image_size):
        members = [m for s in samples for m in _train_members(s, names, image_size)]
        storage.write_bytes(join(root, "train", f"{shard:05d}.tar"), tar_bytes(members), cfg)
        n_shards += 1
    return {
        "pattern": join(root, "train", f"{_brace(5, n_shards)}.tar"),
        "n_shards": n_shards,
        "n_samples": int(sizes.sum()),
        "class_counts": [int(n) for n in sizes],
    }


def _write_eval(
    root: str,
    seed: int,
    names: list[str],
    per_class: int,
    shard_size: int,
    image_size: int,
    cfg: StorageConfig | None,
) -> dict[str, Any]:
    rng = np.random.default_rng([seed, _STREAM_EVAL])
    labels = rng.permutation(np.repeat(np.arange(len(names)), per_class))
    base = join(root, "eval")
    n_shards = 0
    for shard_start in range(0, len(labels), shard_size):
        members: list[tuple[str, bytes]] = []
        for i, concept in enumerate(labels[shard_start : shard_start + shard_size]):
            key = f"s{shard_start + i:07d}"
            members.append((f"{key}.jpg", encode_jpeg(render_concept(names[int(concept)], rng, image_size))))
            members.append((f"{key}.cls", str(int(concept)).encode()))
        storage.write_bytes(join(base, "test", f"{n_shards}.tar"), tar_bytes(members), cfg)
        n_shards += 1
    storage.write_bytes(join(base, "test", "nshards.txt"), f"{n_shards}\n".encode(), cfg)
    storage.write_bytes(join(base, "classnames.txt"), ("\n".join(names) + "\n").encode(), cfg)
    templates = "\n".join(EVAL_TEMPLATES) + "\n"
    storage.write_bytes(join(base, "zeroshot_classification_templates.txt"), templates.encode(), cfg)
    return {
        "root": base,
        "pattern": join(base, "test", f"{{0..{n_shards - 1}}}.tar"),
        "n_shards": n_shards,
        "n_samples": len(labels),
        "per_class": per_class,
        "classnames": join(base, "classnames.txt"),
        "templates": join(base, "zeroshot_classification_templates.txt"),
    }


def generate_demo_data(
    out_dir: str,
    *,
    seed: int = 0,
    n_concepts: int = 24,
    n_train: int = 3000,
    n_eval_per_class: int = 20,
    shard_size: int = 250,
    image_size: int = 64,
    cfg: StorageConfig | None = None,
) -> dict[str, Any]:
    """Write the demo dataset under ``out_dir`` (local path or ``s3://``); returns the manifest.

    Layout: ``train/{00000..N}.tar``, ``eval/test/{0..M}.tar`` with ``eval/classnames.txt`` and
    ``eval/zeroshot_classification_templates.txt``, and ``manifest.json``. Which concept is the
    head depends on the seed; class ids index ``classnames.txt``.
    """
    root = _root(out_dir)
    names = concept_names(n_concepts)
    # Shuffle which concept gets which size, so class id 0 is not always the head.
    order = np.random.default_rng([seed, _STREAM_ORDER]).permutation(n_concepts)
    sizes = np.empty(n_concepts, dtype=np.int64)
    sizes[order] = concept_sizes(n_train, n_concepts)
    manifest = {
        "name": "dynamics-demo",
        "seed": seed,
        "image_size": image_size,
        "classnames_list": names,
        "train": _write_train(root, seed, names, sizes, shard_size, image_size, cfg),
        "eval": _write_eval(root, seed, names, n_eval_per_class, shard_size, image_size, cfg),
    }
    storage.write_json(join(root, "manifest.json"), manifest, cfg)
    return manifest


# ---------------------------------------------------------------- defective shards for tests


def _tar_cut_inside(raw: bytes, member: str) -> int:
    """A byte offset in the middle of ``member``'s data: cutting there truncates the tar."""
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        info = tar.getmember(member)
        return info.offset_data + max(1, info.size // 2)


def _test_members(
    key: str, name: str, rng: np.random.Generator, size: int, *, image: bytes | None, caption: bool, png: bool
) -> list[tuple[str, bytes]]:
    img = render_concept(name, rng, size)
    if image is None and png:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        members = [(f"{key}.png", buf.getvalue())]
    else:
        members = [(f"{key}.jpg", image if image is not None else encode_jpeg(img))]
    if caption:
        members.append((f"{key}.txt", caption_for(name, 0).encode()))
    members.append((f"{key}.json", _json_bytes({"key": key, "concept_name": name})))
    return members


def write_test_shards(
    out_dir: str,
    n_shards: int,
    per_shard: int,
    *,
    corrupt_image: bool = True,
    missing_caption: bool = True,
    truncated: bool = True,
    seed: int = 0,
    image_size: int = 32,
    cfg: StorageConfig | None = None,
) -> dict[str, Any]:
    """Write ``n_shards`` shards of ``per_shard`` samples with known defects; returns what to expect.

    Defects: shard 0 sample 1 has undecodable image bytes (``corrupt_image``), shard 0 sample 2
    has no ``.txt`` (``missing_caption``), shard 0 sample 3 is a PNG, and the last shard is cut
    in the middle of an image (``truncated``), losing that sample and all after it.

    Returned keys: ``pattern``, ``urls``, ``n_written``, ``n_readable`` (samples
    :func:`dynamics.shards.iter_samples` yields), ``n_decodable``, ``iter_stats`` (what
    iter_samples counts), ``stats`` (plus ``corrupt_image``, counted by the decoding caller),
    ``keys`` (readable keys in order), ``corrupt_keys``, ``missing_caption_keys``, ``lost_keys``.
    """
    if n_shards < 1 or per_shard < 6:
        raise ValueError("write_test_shards needs n_shards >= 1 and per_shard >= 6")
    root = _root(out_dir)
    names = concept_names(8)
    rng = np.random.default_rng([seed, _STREAM_TEST])
    out: dict[str, Any] = {
        "urls": [],
        "keys": [],
        "corrupt_keys": [],
        "missing_caption_keys": [],
        "lost_keys": [],
    }
    for shard in range(n_shards):
        members: list[tuple[str, bytes]] = []
        keys = [f"{shard:05d}{i:04d}" for i in range(per_shard)]
        for i, key in enumerate(keys):
            bad = corrupt_image and shard == 0 and i == 1
            no_caption = missing_caption and shard == 0 and i == 2
            image = b"corrupt" + rng.bytes(64) if bad else None
            members += _test_members(
                key,
                names[i % 8],
                rng,
                image_size,
                image=image,
                caption=not no_caption,
                png=shard == 0 and i == 3,
            )
            out["corrupt_keys" if bad else "missing_caption_keys" if no_caption else "keys"].append(key)
        raw = tar_bytes(members)
        if truncated and shard == n_shards - 1:
            cut_at = max(4, per_shard // 2)
            raw = raw[: _tar_cut_inside(raw, f"{keys[cut_at]}.jpg")]
            out["lost_keys"] = keys[cut_at:]
        url = join(root, f"{shard:05d}.tar")
        storage.write_bytes(url, raw, cfg)
        out["urls"].append(url)
    return _test_summary(out, root, n_shards, per_shard, corrupt_image, missing_caption, truncated)


def _test_summary(
    out: dict[str, Any],
    root: str,
    n_shards: int,
    per_shard: int,
    corrupt: bool,
    missing: bool,
    truncated: bool,
) -> dict[str, Any]:
    lost = set(out["lost_keys"])
    readable = sorted(set(out["keys"] + out["corrupt_keys"] + out["missing_caption_keys"]) - lost)
    iter_stats = {"missing_caption": int(missing), "truncated_shard": int(truncated)}
    return {
        **out,
        "keys": readable,
        "pattern": join(root, f"{_brace(5, n_shards)}.tar"),
        "n_written": n_shards * per_shard,
        "n_readable": len(readable),
        "n_decodable": len(readable) - int(corrupt),
        "iter_stats": {k: v for k, v in iter_stats.items() if v},
        "stats": {k: v for k, v in {**iter_stats, "corrupt_image": int(corrupt)}.items() if v},
    }
