"""BERT's uncased WordPiece tokenizer from a `vocab.txt`, with no dependency.

As `transformers.BertTokenizer(do_lower_case=True)`: clean the text (drop control characters,
whitespace to spaces), put spaces around CJK characters, lowercase and strip accents, split on
whitespace and punctuation, then cut each word into the longest vocabulary pieces from the left
("##" marks a continuation); a word with no such split, or longer than 100 characters, is [UNK].
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True  # ASCII non-alphanumerics count as punctuation, as in BERT
    return unicodedata.category(ch).startswith("P")


_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _clean(text: str) -> str:
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C")
                                       and ch not in "\t\n\r"):
            continue
        if ch in "\t\n\r" or unicodedata.category(ch) == "Zs":
            out.append(" ")
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    return "".join(out)


def basic_tokens(text: str) -> list[str]:
    """Lowercased, accent-stripped words and punctuation marks of `text`."""
    text = unicodedata.normalize("NFD", _clean(text).lower())
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")  # strip accents
    tokens: list[str] = []
    for word in text.split():
        current = ""
        for ch in word:
            if _is_punctuation(ch):
                tokens += [current, ch] if current else [ch]
                current = ""
            else:
                current += ch
        if current:
            tokens.append(current)
    return tokens


class WordPieceTokenizer:
    """Text -> BERT token ids ([CLS] ... [SEP]), from a vocab.txt (one token a line)."""

    def __init__(self, vocab_file: str | Path, max_length: int = 128):
        lines = Path(vocab_file).read_text(encoding="utf-8").splitlines()
        self.vocab = {token: i for i, token in enumerate(lines)}
        missing = [t for t in SPECIAL if t not in self.vocab]
        if missing:
            raise ValueError(f"{vocab_file}: not a BERT vocabulary, it lacks {missing}")
        self.max_length = max_length

    def pieces(self, word: str) -> list[str]:
        """The greedy longest-match-first WordPiece split of one word ([UNK] if none)."""
        if len(word) > 100:
            return ["[UNK]"]
        out, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:
                return ["[UNK]"]
            out.append(piece)
            start = end
        return out

    def tokenize(self, text: str) -> list[str]:
        """The WordPiece tokens of `text`, without [CLS] and [SEP]."""
        return [p for word in basic_tokens(text) for p in self.pieces(word)]

    def encode(self, text: str) -> list[int]:
        """[CLS] tokens [SEP] as ids, cut to `max_length` in all."""
        tokens = self.tokenize(text)[: self.max_length - 2]
        return [self.vocab[t] for t in ("[CLS]", *tokens, "[SEP]")]
