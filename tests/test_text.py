import io

import pytest
import torch

from multimodal.encoders.text import TextConfig, TextEncoder
from multimodal.errors import InputError
from multimodal.tokenizers import BPETokenizer, CharTokenizer, Tokenizer

CAPTIONS = ["a small red circle left of a blue square", "a large green star", "a purple diamond above a gray cross",
            "a white triangle below an orange star", "seven three nine one"]


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(CAPTIONS * 20, vocab_size=300)


def reload(tokenizer: Tokenizer) -> Tokenizer:
    """Through a checkpoint file that only the safe unpickler reads."""
    buffer = io.BytesIO()
    torch.save({"tokenizer": tokenizer.to_dict()}, buffer)
    buffer.seek(0)
    return Tokenizer.from_dict(torch.load(buffer, weights_only=True)["tokenizer"])


def test_char_tokenizer_round_trips_and_names_unknown_characters():
    tokenizer = CharTokenizer.from_texts(CAPTIONS)
    assert (tokenizer.pad, tokenizer.sos, tokenizer.eos, tokenizer.blank) == (0, 1, 2, 0)
    assert tokenizer.vocab_size == 3 + len(set("".join(CAPTIONS)))
    ids = tokenizer.encode("a red star")
    assert min(ids) >= 3 and tokenizer.decode([tokenizer.sos, *ids, tokenizer.eos, 0, 0]) == "a red star"
    with pytest.raises(InputError, match=r"unknown characters 'A', 'ß', 'é' in transcript 'A ßtar é'"):
        tokenizer.encode("A ßtar é")
    again = reload(tokenizer)
    assert isinstance(again, CharTokenizer) and again.encode("a red star") == ids


def test_bpe_round_trips_lowercased_with_specials_first(bpe):
    assert bpe.vocab_size == 300 and (bpe.pad, bpe.sos, bpe.eos) == (0, 1, 2)
    ids = bpe.encode("A Large Green Star")
    assert min(ids) >= 3 and len(ids) < len("a large green star") / 2  # merges were learned
    assert bpe.decode([bpe.sos, *ids, bpe.eos, bpe.pad]) == "a large green star"
    assert bpe.decode(bpe.encode("zébra ünseen ✓")) == "zébra ünseen ✓"  # byte level: nothing is unknown
    again = reload(bpe)
    assert isinstance(again, BPETokenizer) and again.encode("a large green star") == ids


def test_encode_batch_pads_and_truncates_with_a_warning(bpe):
    tokens, lengths = bpe.encode_batch(["a large green star", "a red circle"], context_length=32)
    n = len(bpe.encode("a large green star")) + 2
    assert tokens.shape == (2, n) and lengths[0] == n and tokens.dtype == torch.long
    assert tokens[0, 0] == bpe.sos and tokens[0, n - 1] == bpe.eos and (tokens[1, lengths[1]:] == bpe.pad).all()
    with pytest.warns(UserWarning, match="cut to the context length 6: 'a small red circle left of a blue square'"):
        tokens, lengths = bpe.encode_batch([CAPTIONS[0], "a star"], context_length=6)
    assert tokens.shape == (2, 6) and tokens[0, -1] == bpe.eos and lengths[1] < 6
    with pytest.raises(ValueError, match="unknown tokenizer type 'word'"):
        Tokenizer.from_dict({"type": "word"})


def test_text_encoder_gives_the_same_embedding_padded_and_alone(bpe):
    torch.manual_seed(0)
    encoder = TextEncoder(TextConfig(bpe.vocab_size, 32, embed_dim=16, transformer=dict(dim=32, depth=2, num_heads=4)))
    tokens, lengths = bpe.encode_batch(CAPTIONS, context_length=32)
    padded = encoder(tokens, lengths)
    assert padded.shape == (5, 16)
    for i in range(5):
        torch.testing.assert_close(padded[i], encoder(tokens[i:i + 1, :lengths[i]])[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="context length 32"):
        encoder(torch.zeros(1, 33, dtype=torch.long))
    encoder.lock()
    assert not any(p.requires_grad for p in encoder.parameters())
