"""Two tokenizers behind one interface: characters for speech, byte-level BPE for captions.

In both, ids 0, 1, 2 are <pad>, <sos>, <eos>. CTC's blank is id 0 too: <pad> is never a target of
either loss (cross-entropy ignores it, CTC targets stop at their lengths), so the two roles never meet.
A tokenizer saves itself as plain str / int / list / dict (``to_dict``), so it travels inside a
checkpoint that ``torch.load(weights_only=True)`` can read.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers
from torch import Tensor

from multimodal.errors import InputError

SPECIALS = ["<pad>", "<sos>", "<eos>"]


class Tokenizer(ABC):
    pad, sos, eos = 0, 1, 2
    blank = pad
    kind: str  # the "type" field of to_dict

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """The ids of ``text``, without <sos> / <eos>."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; special tokens are skipped."""

    @abstractmethod
    def to_dict(self) -> dict: ...

    @property
    def prompt(self) -> list[int]:
        """The tokens a decoder starts from, before the text: <sos> here; a longer start sequence in
        tokenizers that have one (Whisper's names the language and the task)."""
        return [self.sos]

    @staticmethod
    def from_dict(data: dict) -> Tokenizer:
        """Rebuild any tokenizer from its ``to_dict``, those of converted OpenCLIP / Whisper models too. ValueError
        saying what is wrong for anything that is not such a dict (a checkpoint's entry may be damaged)."""
        if not isinstance(data, dict):
            raise ValueError(f"a tokenizer entry must be a dict with a \"type\", not {type(data).__name__}")
        kinds = {cls.kind: cls for cls in (CharTokenizer, BPETokenizer, CLIPTokenizer, WhisperTokenizer)}
        kind = data.get("type")
        if not isinstance(kind, str) or kind not in kinds:
            raise ValueError(f"unknown tokenizer type {kind!r}; expected one of {sorted(kinds)}")
        fields = {k: v for k, v in data.items() if k != "type"}
        try:
            return kinds[kind](**fields)
        except ImportError as e:
            raise ValueError(f"the {kind!r} tokenizer needs the package {e.name or e}, not installed here "
                             f"(pip install 'multimodal[interop]')") from e
        except Exception as e:  # wrong fields or values: the libraries below raise many kinds
            reason = (str(e).splitlines() or [""])[0][:200]
            raise ValueError(f"a bad {kind!r} tokenizer entry ({type(e).__name__}: {reason})") from e

    def encode_batch(self, texts: Iterable[str], context_length: int) -> tuple[Tensor, Tensor]:
        """<sos> text <eos> for each text, right-padded with <pad> to the longest: (B, T) ids, (B,) lengths.

        A text longer than ``context_length`` tokens is cut (a warning names it) and still ends in <eos>,
        which the text encoder reads its embedding from.
        """
        rows = []
        for text in texts:
            ids = [self.sos, *self.encode(text), self.eos]
            if len(ids) > context_length:
                warnings.warn(f"text of {len(ids)} tokens cut to the context length {context_length}: {text!r}",
                              stacklevel=2)
                ids = ids[:context_length - 1] + [self.eos]
            rows.append(ids)
        width = max(map(len, rows), default=0)
        tokens = torch.tensor([ids + [self.pad] * (width - len(ids)) for ids in rows], dtype=torch.long)
        return tokens.view(len(rows), width), torch.tensor([len(ids) for ids in rows])


class CharTokenizer(Tokenizer):
    """One id per character, after the specials. No normalisation: the data decide what a character is."""

    kind = "char"

    def __init__(self, chars: list[str]):
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError(f"chars must be distinct single characters, got {chars!r}")
        self.chars = list(chars)
        self.ids = {c: i for i, c in enumerate(self.chars, start=len(SPECIALS))}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CharTokenizer:
        return cls(sorted(set().union(*texts)))

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + len(self.chars)

    def encode(self, text: str) -> list[int]:
        unknown = [c for c in dict.fromkeys(text) if c not in self.ids]  # in order of appearance
        if unknown:
            raise InputError(f"unknown characters {', '.join(map(repr, unknown))} in transcript {text!r} "
                             f"(the tokenizer knows {''.join(self.chars)!r})")
        return [self.ids[c] for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i - len(SPECIALS)] for i in map(int, ids) if i >= len(SPECIALS))

    def to_dict(self) -> dict:
        return {"type": self.kind, "chars": list(self.chars)}


class BPETokenizer(Tokenizer):
    """Byte-level BPE (GPT-2 / CLIP style) from Hugging Face ``tokenizers``, lowercased.

    Byte-level means every text can be encoded: there is no unknown token.
    """

    kind = "bpe"

    def __init__(self, json: str):  # the Hugging Face tokenizer's own JSON (``to_str``)
        self.tokenizer = HFTokenizer.from_str(json)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        tokenizer = HFTokenizer(models.BPE())
        tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tokenizer.train_from_iterator(texts, trainer)  # the specials get ids 0, 1, 2 in SPECIALS' order
        return cls(tokenizer.to_str())

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(map(int, ids)), skip_special_tokens=True)

    def to_dict(self) -> dict:
        return {"type": self.kind, "json": self.tokenizer.to_str()}


class CLIPTokenizer(Tokenizer):
    """open_clip's CLIP BPE (lower-cased, 49,408 ids): <sos> = <start_of_text> 49406, <eos> = <end_of_text>
    49407, padding with id 0 as open_clip does (harmless: the text tower is causal and reads <eos>)."""

    kind = "open_clip_bpe"
    pad = blank = 0
    sos, eos = 49406, 49407

    def __init__(self):
        from open_clip.tokenizer import SimpleTokenizer  # an optional dependency (the interop extra)

        self.tokenizer = SimpleTokenizer()
        self.sos, self.eos = self.tokenizer.sot_token_id, self.tokenizer.eot_token_id

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer.encoder)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids`` up to the first <eos> (what follows it is padding), <sos> skipped."""
        ids = list(map(int, ids))
        ids = [i for i in ids[:ids.index(self.eos)] if i != self.sos] if self.eos in ids else ids
        return self.tokenizer.decode([i for i in ids if i != self.sos]).strip()

    def to_dict(self) -> dict:
        return {"type": self.kind}


class WhisperTokenizer(Tokenizer):
    """Whisper's tiktoken vocabulary (shipped in the openai-whisper wheel). <sos> = <|startoftranscript|>,
    <eos> = <pad> = <|endoftext|> (as Hugging Face pads). Its ``prompt``, which a SpeechRecognizer's decoder
    starts from, is the start-of-transcript sequence <|startoftranscript|> [<|lang|> <|task|>] <|notimestamps|>."""

    kind = "whisper"

    def __init__(self, multilingual: bool = True, num_languages: int = 99, language: str | None = "en",
                 task: str = "transcribe"):
        from whisper.tokenizer import get_tokenizer  # an optional dependency (the interop extra)

        self.multilingual, self.num_languages, self.language, self.task = multilingual, num_languages, language, task
        self.tokenizer = get_tokenizer(multilingual, num_languages=num_languages,
                                       language=language if multilingual else None,
                                       task=task if multilingual else None)
        self.sos, self.eos = self.tokenizer.sot, self.tokenizer.eot
        self.pad = self.blank = self.tokenizer.eot

    @property
    def prompt(self) -> list[int]:
        return list(self.tokenizer.sot_sequence_including_notimestamps)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.encoding.n_vocab

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode([i for i in map(int, ids) if i < self.eos]).strip()  # specials come after text

    def to_dict(self) -> dict:
        return {"type": self.kind, "multilingual": self.multilingual, "num_languages": self.num_languages,
                "language": self.language, "task": self.task}
