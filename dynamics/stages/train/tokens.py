"""Captions tokenised once by the embed stage, so that training does not tokenise them again.

open_clip's ``SimpleTokenizer`` costs ~200 us of CPU per caption (ftfy, regex, BPE): a fifth of the
loader's per-sample CPU on reduced shards. The embed stage reads every caption once anyway, so it stores
each caption's BPE ids (:data:`BPE_EXT` member of the reduced shards: a 4-byte tag of the tokenizer's
package versions, then the ids without start/end token, untruncated, little-endian uint16) and
:class:`CaptionTokenizer` turns them into the rows the trainer's tokenizer would have produced. It uses
them only when that tokenizer is open_clip's default ``SimpleTokenizer``
(same vocabulary, clean function, no reduction mask); with any other it tokenises every caption.
"""

from __future__ import annotations

import functools
import logging
import zlib
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import numpy as np

from dynamics.storage.shards import BPE_EXT as BPE_EXT

# torch and open_clip load on first use: the embed stage's writer imports this module, and so, through
# dynamics.estimate, does the `dynamics` command of the controller image, which has neither.
if TYPE_CHECKING:
    import torch
    from open_clip.tokenizer import SimpleTokenizer

log = logging.getLogger(__name__)

_DTYPE = np.dtype("<u2")
_MAX_ID = int(np.iinfo(_DTYPE).max)
_logged: set[str] = set()  # reasons already logged by this process (one line, not one per epoch)


@functools.cache
def default_tokenizer() -> SimpleTokenizer:
    """open_clip's default ``SimpleTokenizer`` (created on first use: loading the vocabulary takes a while)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


@functools.cache
def tokenizer_tag() -> bytes:
    """4 bytes naming the packages that turn captions into ids (open_clip's BPE, ftfy's cleaning).

    The embed and trainer images install the same lock file, but ids written by an older embed image must
    not silently stand for what a newer trainer's tokenizer makes of the caption: a different tag means
    the caption is tokenised again.
    """
    names = []
    for package in ("open_clip_torch", "ftfy", "regex"):
        try:
            names.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            names.append(f"{package} ?")
    return zlib.crc32("; ".join(names).encode()).to_bytes(4, "little")


TAG_BYTES = 4


def encode_caption(caption: str) -> bytes:
    """:func:`tokenizer_tag`, then ``caption``'s BPE ids under the default tokenizer (no start/end tokens)
    as little-endian uint16. Raises ValueError if an id does not fit 16 bits (CLIP's vocabulary has 49,408).
    """
    ids = default_tokenizer().encode(caption)
    if ids and max(ids) > _MAX_ID:
        raise ValueError(f"BPE id {max(ids)} does not fit uint16")
    return tokenizer_tag() + np.asarray(ids, dtype=_DTYPE).tobytes()


def decode_ids(data: bytes) -> np.ndarray | None:
    """The ids stored by :func:`encode_caption`; None when another tokenizer version wrote them or the
    bytes are malformed."""
    if len(data) < TAG_BYTES or (len(data) - TAG_BYTES) % _DTYPE.itemsize or data[:TAG_BYTES] != tokenizer_tag():
        return None
    return np.frombuffer(data, dtype=_DTYPE, offset=TAG_BYTES)


def incompatibility(tokenizer: Any) -> str | None:
    """Why stored ids would not give ``tokenizer``'s output, or None when they would."""
    from open_clip.tokenizer import SimpleTokenizer

    # A subclass may override encode or __call__: only the class itself is known to build rows as we do.
    if type(tokenizer) is not SimpleTokenizer:
        return f"the model's tokenizer is {type(tokenizer).__name__}, not open_clip's SimpleTokenizer"
    default = default_tokenizer()
    if tokenizer.reduction_fn is not None:
        return "the tokenizer drops tokens with a reduction mask"
    if tokenizer.clean_fn is not default.clean_fn:
        return f"the tokenizer cleans captions with {getattr(tokenizer.clean_fn, '__name__', 'another function')}"
    if not tokenizer.context_length or tokenizer.context_length < 2:
        return f"the tokenizer's context length is {tokenizer.context_length}"
    if (tokenizer.sot_token_id, tokenizer.eot_token_id) != (default.sot_token_id, default.eot_token_id):
        return "the tokenizer's start/end tokens differ from the default vocabulary's"
    if (tokenizer.pat.pattern != default.pat.pattern or tokenizer.encoder != default.encoder
            or tokenizer.bpe_ranks != default.bpe_ranks):
        return "the tokenizer's vocabulary or merges differ from the default ones"
    return None


def _once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        log.info("%s", message)


class CaptionTokenizer:
    """``tokenizer(captions)``, taking each caption's stored BPE ids where it has them.

    ``tokenizer`` is the trainer's (``open_clip.get_tokenizer(model, context_length=...)``). Calling
    the instance with ``captions`` and, per caption, its stored ids (``bpe``, None where absent) returns
    exactly ``tokenizer(captions)``: a LongTensor ``(len(captions), context_length)``. Stored ids are
    ignored when :func:`incompatibility` finds a reason; malformed ones (odd length, id outside the
    vocabulary) and ones another open_clip/ftfy version wrote fall back to tokenising that caption.
    Picklable when ``tokenizer`` is.
    """

    def __init__(self, tokenizer: Callable[[list[str]], torch.Tensor]) -> None:
        self.tokenizer = tokenizer
        reason = incompatibility(tokenizer)
        self.use_stored = reason is None
        if reason is not None:
            _once(f"captions are tokenised in the loader, not taken from stored BPE ids: {reason}")
        if self.use_stored:
            tok: SimpleTokenizer = tokenizer  # type: ignore[assignment]
            self.context_length = int(tok.context_length)  # type: ignore[arg-type]
            self.sot, self.eot, self.vocab = tok.sot_token_id, tok.eot_token_id, len(tok.encoder)

    def _ids(self, data: bytes | None) -> np.ndarray | None:
        if data is None:
            return None
        ids = decode_ids(data)
        if ids is None or (ids.size and int(ids.max()) >= self.vocab):
            # Correct either way, but slower: say so once (e.g. an embed image older than the trainer's).
            _once("some stored caption BPE ids are malformed or were written by other open_clip/ftfy/regex "
                  "versions; those captions are tokenised in the loader")
            return None
        return ids

    def __call__(self, captions: list[str], bpe: Sequence[bytes | None]) -> torch.Tensor:
        """Token rows of ``captions`` (``(B, context_length)`` int64), as the trainer's tokenizer gives them."""
        import torch

        if len(bpe) != len(captions):
            raise ValueError(f"{len(captions)} captions but {len(bpe)} stored id lists")
        if not self.use_stored:
            return self.tokenizer(captions)
        ctx = self.context_length
        rows = np.zeros((len(captions), ctx), dtype=np.int64)
        missing: list[int] = []
        for i, data in enumerate(bpe):
            ids = self._ids(data)
            if ids is None:
                missing.append(i)
                continue
            # SimpleTokenizer: [sot] + ids + [eot], cut to the context length with eot kept last.
            ids = ids[: ctx - 2]
            rows[i, 0] = self.sot
            rows[i, 1 : ids.size + 1] = ids
            rows[i, ids.size + 1] = self.eot
        out = torch.from_numpy(rows)
        if missing:
            out[missing] = self.tokenizer([captions[i] for i in missing])
        return out
