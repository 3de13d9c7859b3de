"""Stored BPE ids: the embed stage's reduced copies carry them and give exactly the trainer's token rows."""

from __future__ import annotations

import io
import logging
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer

from dynamics.stages.embed.reduced import ReducedShardWriter
from dynamics.stages.train import tokens
from dynamics.stages.train.tokens import (
    BPE_EXT,
    CaptionTokenizer,
    decode_ids,
    encode_caption,
    incompatibility,
    tokenizer_tag,
)
from dynamics.storage.shards import Sample, SkipStats, decode_image, iter_stream

CAPTIONS = [
    "a photo of a cat",
    "A Dog, running! on the beach... (at sunset)?",
    "Café crème brûlée — naïve façade; 東京の夜景 and 서울",
    "emoji 🐱🐶🎉 mixed with text 👍🏽",
    "Tom &amp; Jerry &lt;3 &quot;quoted&quot; &#39;single&#39; &amp;amp; double",
    "mojibake: Ã©tÃ© caf\u00c3\u00a9",
    "numbers 1234567890 3.14159 and units 5kg 10km/h",
    "tabs\tand\nnewlines   and    spaces",
    "it's they're we've I'm you'll he'd",
    "",
    "   \t\n  ",
    " ".join(f"word{i}" for i in range(40)),
    "a very long caption " * 30,
    "supercalifragilisticexpialidocious antidisestablishmentarianism " * 8,
    "x" * 500,
    "!!!???...,,,;;;:::" * 10,
]


@pytest.fixture(scope="module")
def stored() -> list[bytes]:
    return [encode_caption(c) for c in CAPTIONS]


def test_stored_ids_are_the_default_tokenizers_without_start_and_end() -> None:
    ids = decode_ids(encode_caption("a photo of a cat"))
    assert ids is not None and ids.dtype == np.dtype("<u2")
    assert ids.tolist() == SimpleTokenizer().encode("a photo of a cat")
    assert encode_caption("") == tokenizer_tag() and decode_ids(tokenizer_tag()).size == 0
    assert BPE_EXT == "bpe"


@pytest.mark.parametrize("context", [32, 77])
def test_rows_equal_the_tokenizers_for_all_present_and_mixed(context: int, stored: list[bytes]) -> None:
    tok = open_clip.get_tokenizer("ViT-B-16", context_length=context)
    caption_tokenizer = CaptionTokenizer(tok)
    assert caption_tokenizer.use_stored
    expected = tok(CAPTIONS)
    got = caption_tokenizer(CAPTIONS, stored)
    assert got.dtype == torch.long and got.shape == (len(CAPTIONS), context)
    assert torch.equal(got, expected)
    for pattern in ([i % 2 == 0 for i in range(len(CAPTIONS))], [i % 3 == 1 for i in range(len(CAPTIONS))],
                    [False] * len(CAPTIONS)):
        bpe = [b if keep else None for b, keep in zip(stored, pattern, strict=True)]
        assert torch.equal(caption_tokenizer(CAPTIONS, bpe), expected)
    assert torch.equal(caption_tokenizer(CAPTIONS[:1], stored[:1]), tok(CAPTIONS[:1]))


def test_long_captions_are_cut_with_the_end_token_last(stored: list[bytes]) -> None:
    tok = SimpleTokenizer(context_length=32)
    rows = CaptionTokenizer(tok)(CAPTIONS, stored)
    long_row = rows[CAPTIONS.index("x" * 500)]
    assert long_row[0] == tok.sot_token_id and long_row[-1] == tok.eot_token_id
    assert rows[CAPTIONS.index("")].tolist()[:3] == [tok.sot_token_id, tok.eot_token_id, 0]


def test_stored_ids_do_not_stand_for_the_captions_tokens_of_a_tokenizer_that_differs(
        caplog: pytest.LogCaptureFixture) -> None:
    # deliberately not these captions' ids
    wrong = [tokenizer_tag() + np.full(5, 7, dtype="<u2").tobytes()] * len(CAPTIONS)
    for tok in (SimpleTokenizer(context_length=32, clean="canonicalize"),
                SimpleTokenizer(context_length=32, clean="whitespace"),
                SimpleTokenizer(context_length=32, reduction_mask="simple"),
                SimpleTokenizer(context_length=32, additional_special_tokens=["<extra>"])):
        with caplog.at_level(logging.INFO, logger="dynamics.stages.train.tokens"):
            caption_tokenizer = CaptionTokenizer(tok)
        assert not caption_tokenizer.use_stored and incompatibility(tok)
        random.seed(0)  # the reduction mask draws at random
        got = caption_tokenizer(CAPTIONS, wrong)
        random.seed(0)
        assert torch.equal(got, tok(CAPTIONS))
    assert "not taken from stored BPE ids" in caplog.text

    class Subclass(SimpleTokenizer):
        pass

    assert "Subclass" in (incompatibility(Subclass()) or "")
    assert incompatibility(lambda texts: torch.zeros(len(texts), 77)) is not None


def test_malformed_ids_fall_back_to_tokenising(caplog: pytest.LogCaptureFixture) -> None:
    tok = SimpleTokenizer(context_length=32)
    captions = ["odd length", "outside the vocabulary", "another version wrote it", "fine"]
    other = bytes(b ^ 0xFF for b in tokenizer_tag())
    bpe = [tokenizer_tag() + b"\x01\x02\x03", tokenizer_tag() + np.array([65535], dtype="<u2").tobytes(),
           other + encode_caption("a photo")[len(other):], encode_caption("fine")]
    tokens._logged.clear()  # a fresh process's state
    with caplog.at_level(logging.INFO, logger="dynamics.stages.train.tokens"):
        assert torch.equal(CaptionTokenizer(tok)(captions, bpe), tok(captions))
        assert torch.equal(CaptionTokenizer(tok)(captions, bpe), tok(captions))
    assert caplog.text.count("other open_clip/ftfy/regex versions") == 1  # said once, not per batch
    with pytest.raises(ValueError, match="2 stored"):
        CaptionTokenizer(tok)(captions, bpe[:2])


def test_picklable(stored: list[bytes]) -> None:
    tok = SimpleTokenizer(context_length=32)
    copy = pickle.loads(pickle.dumps(CaptionTokenizer(tok)))
    assert torch.equal(copy(CAPTIONS, stored), tok(CAPTIONS))


def _jpeg(size: int) -> bytes:
    buf = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (size, size), (10, 20, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def test_reduced_writer_stores_the_ids_and_the_reader_gives_them_back() -> None:
    writer = ReducedShardWriter(32)
    captions = ["a red square", None, "Tom &amp; Jerry 🐱"]
    for row, caption in enumerate(captions):
        data = _jpeg(64)
        writer.add(Sample("s", f"k{row}", data, "jpg", caption, None, row), decode_image(data, "jpg"))
    names = [name for name, _ in writer.members]
    assert names == ["k0.jpg", "k0.txt", "k0.bpe", "k1.jpg", "k2.jpg", "k2.txt", "k2.bpe"]
    back = list(iter_stream("mem.tar", io.BytesIO(writer.tar_bytes()), SkipStats()))
    assert [(s.key, s.image_ext, s.caption) for s in back] == [("k0", "jpg", captions[0]), ("k1", "jpg", None),
                                                               ("k2", "jpg", captions[2])]
    assert [s.bpe for s in back] == [encode_caption(captions[0]), None, encode_caption(captions[2])]
    tok = SimpleTokenizer(context_length=77)
    texts = [s.caption for s in back if s.caption is not None]
    assert torch.equal(CaptionTokenizer(tok)(texts, [s.bpe for s in back if s.caption]), tok(texts))


def test_the_writer_side_imports_neither_torch_nor_open_clip() -> None:
    # The controller image's `dynamics` command reaches this module through dynamics.estimate.
    code = ("import sys, importlib.abc\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'open_clip'):\n"
            "            raise ImportError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import dynamics.stages.embed.reduced, dynamics.stages.train.tokens\n")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
