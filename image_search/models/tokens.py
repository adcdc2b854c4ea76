"""A CLIP tokenizer built offline, for models that come without a vocabulary (the random-weights
benchmark model, the tiny test model)."""

from __future__ import annotations

from typing import Any


def byte_level_clip_tokenizer(extra_words: tuple[str, ...] = ()) -> Any:
    """A CLIP tokenizer with a byte-level vocabulary (no merges beyond ``extra_words``).

    Used where the real vocabulary is not available: the random-weights benchmark model and
    the tiny test model. Queries tokenise into more pieces than with the real vocabulary.
    """
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in extra_words:
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            vocab.setdefault(pieces[0], len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges)  # type: ignore[arg-type]  # tuples, as the tokenizers backend wants


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def byte_level_siglip_tokenizer(extra_words: tuple[str, ...] = ()) -> Any:
    """A SigLIP 2 tokenizer (Gemma's kind: byte fallback, lower-casing) with a vocabulary of the
    five specials, the 256 byte pieces, the lower-case letters and ``extra_words`` (their letters,
    then merged from them): where the real vocabulary is not available. Every text tokenises, in any
    script, through the byte pieces."""
    from transformers.models.siglip2.tokenization_siglip2 import Siglip2Tokenizer

    vocab: dict[str, int] = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece in ["▁", *"abcdefghijklmnopqrstuvwxyz0123456789"]:
        vocab.setdefault(piece, len(vocab))
    for word in extra_words:  # their letters, in any script, as the real vocabulary has them
        for letter in word:
            vocab.setdefault(letter, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in extra_words:
        pieces = ["▁", *word]
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            vocab.setdefault(pieces[0], len(vocab))
    return Siglip2Tokenizer(vocab=vocab, merges=merges)  # type: ignore[arg-type]  # tuples, as the backend wants
