"""Text encoders for text-to-video: a native BERT (Hugging Face format) with its WordPiece
tokenizer, the weight-free `HashTextEncoder`, and the choice of encoder by name
(`build_text_encoder`)."""

from vidiff.text.bert import BertConfig, BertEncoder, load_bert
from vidiff.text.clip import ClipTextEncoder, is_clip_root
from vidiff.text.encoders import (
    BertTextEncoder,
    build_text_encoder,
    resolve_text_encoder,
    text_encoder_named,
    text_width,
)
from vidiff.text.hash import HashTextEncoder
from vidiff.text.wordpiece import WordPieceTokenizer, basic_tokens

__all__ = [
    "BertConfig",
    "BertEncoder",
    "BertTextEncoder",
    "ClipTextEncoder",
    "HashTextEncoder",
    "WordPieceTokenizer",
    "basic_tokens",
    "build_text_encoder",
    "is_clip_root",
    "load_bert",
    "resolve_text_encoder",
    "text_encoder_named",
    "text_width",
]
