"""The tokenizer of the semantic side, always from a LOCAL folder (never a hub), and the chat special tokens.

    tokenizer = load_tokenizer("weights/Qwen2-VL-2B-Instruct")      # a Hugging Face Qwen2-VL folder
    tokens = ChatTokens.of(tokenizer)                                # ids of <|im_start|>, <|im_end|>, ...

`build_character_tokenizer(folder)` writes a tiny character-level tokenizer that carries Qwen2-VL's special
tokens (92 ids in all): the tests and the CPU demo use it with the `tiny` / `small` presets (vocabulary 128), so
they need no download and keep the embedding small. Its ids are not Qwen's; weights trained with it only pair
with it.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
)
# Qwen2's pre-tokenizer split (its tokenizer.json): contractions, words, single digits, punctuation runs, newlines,
# spaces. Numbers are split into digits, so "2.52" is always 2 . 5 2 and a model can learn each digit.
QWEN2_SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                       r"\s*[\r\n]+|\s+(?!\S)|\s+")
CHARACTERS = string.ascii_letters + string.digits + " \n.,:;?!'\"()-+/%<>=_*#&[]"


def build_character_tokenizer(folder: str | Path):
    """Write a character-level tokenizer with the Qwen2-VL special tokens to `folder`; return it loaded."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {character: index for index, character in enumerate(CHARACTERS)}
    vocab["<unk>"] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character, new lines too
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(list(QWEN_SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        unk_token="<unk>")
    Path(folder).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
    return load_tokenizer(folder)


def train_bpe_tokenizer(folder: str | Path, texts, vocab_size: int = 512):
    """Train a byte-level BPE of `vocab_size` ids (special tokens included) on `texts` (an iterable of strings),
    pre-tokenized as Qwen2's (digits one by one), write it to `folder`; return it loaded."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(QWEN_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    Path(folder).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
    return load_tokenizer(folder)


def load_tokenizer(folder: str | Path):
    """A tokenizer from a local folder (a Qwen2-VL model folder or one written by `build_character_tokenizer`).
    Raises ValueError naming the folder when it is missing or lacks a Qwen2-VL special token."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"load_tokenizer: tokenizer folder {folder} does not exist")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    ChatTokens.of(tokenizer, str(folder))
    return tokenizer


@dataclass(frozen=True)
class ChatTokens:
    """Ids of the chat template's special tokens."""

    im_start: int
    im_end: int
    vision_start: int
    vision_end: int
    pad: int

    @classmethod
    def of(cls, tokenizer, source: str = "tokenizer") -> ChatTokens:
        ids = {}
        for token in QWEN_SPECIAL_TOKENS:
            index = tokenizer.convert_tokens_to_ids(token)
            if index is None or index == tokenizer.unk_token_id:
                raise ValueError(f"ChatTokens.of: {source} has no special token {token}")
            ids[token] = int(index)
        return cls(ids["<|im_start|>"], ids["<|im_end|>"], ids["<|vision_start|>"], ids["<|vision_end|>"],
                   ids["<|endoftext|>"])
