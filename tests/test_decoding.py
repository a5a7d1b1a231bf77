import pytest
import torch
import torch.nn.functional as F
from torch import nn

from multimodal.encoders.audio import AudioEncoder, AudioEncoderConfig
from multimodal.encoders.text import TextConfig, TextDecoder, beam_search, greedy_decode
from multimodal.nn import KVCache
from multimodal.tokenizers import CharTokenizer

torch.manual_seed(0)
SOS, EOS = 1, 2
CFG = TextConfig(vocab_size=12, context_length=16, transformer=dict(dim=32, depth=2, num_heads=4))


def random_decoder() -> TextDecoder:
    decoder = TextDecoder(CFG, memory_dim=24).eval()
    nn.init.normal_(decoder.token_embedding.weight)  # peaked distributions, like a trained model's
    return decoder


def memory_batch(B: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.ones(B, 10, dtype=torch.bool)
    mask[1, 6:] = False
    return torch.randn(B, 10, 24), mask


def score(decoder, memory, mask, seq: list[int], max_len: int, length_penalty: float = 1.0) -> float:
    """log p(seq <eos>) / (len + 1) ** penalty by one full forward; a sequence cut at max_len has no <eos>."""
    tokens = torch.tensor([[SOS, *seq, EOS]]) if len(seq) < max_len else torch.tensor([[SOS, *seq]])
    logp = decoder(tokens[:, :-1], memory[None], mask[None]).log_softmax(-1)
    return logp[0].gather(1, tokens[0, 1:, None]).sum().item() / (tokens.shape[1] - 1) ** length_penalty


def test_cached_step_by_step_decoding_equals_full_forward():
    decoder = random_decoder()
    memory, mask = memory_batch()
    tokens = torch.randint(3, 12, (3, 7))
    full = decoder(tokens, memory, mask)
    cache = KVCache()
    steps = [decoder(tokens[:, t:t + 1], memory, mask, cache) for t in range(7)]
    assert len(cache) == 7
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)
    # positions continue from the cache: feeding step 2 without it gives other logits
    assert not torch.allclose(decoder(tokens[:, 2:3], memory, mask), full[:, 2:3], atol=1e-3)
    with pytest.raises(ValueError, match="context length 16"):
        decoder(torch.zeros(1, 17, dtype=torch.long), memory[:1])


def test_beam_of_one_is_greedy_and_wider_beams_never_score_lower():
    decoder = random_decoder()
    memory, mask = memory_batch()
    greedy = greedy_decode(decoder, memory, mask, SOS, EOS, max_len=12)
    assert beam_search(decoder, memory, mask, SOS, EOS, beam_size=1, max_len=12) == greedy
    assert len({len(seq) for seq in greedy}) > 1  # sequences end at different steps
    beams = beam_search(decoder, memory, mask, SOS, EOS, beam_size=4, max_len=12)
    for b in range(3):
        assert score(decoder, memory[b], mask[b], beams[b], 12) >= score(decoder, memory[b], mask[b], greedy[b], 12)


class Bigram(nn.Module):
    """A decoder whose next-token distribution depends on the last token only (ignores memory and cache)."""

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.logits = probs.log()

    def forward(self, tokens, memory, memory_mask=None, cache=None):
        return self.logits[tokens]  # (B, T, V)


def test_beam_search_escapes_the_greedy_trap():
    A, B = 3, 4
    probs = torch.full((5, 5), 0.2)  # rows: the last token; columns: the next one. 0 is <pad>.
    probs[SOS] = torch.tensor([0, 0, 0, 0.55, 0.45])
    probs[A] = torch.tensor([0, 0, 0.3, 0.4, 0.3])  # A is likelier first, but nothing ends well after it
    probs[B] = torch.tensor([0, 0, 0.9, 0.05, 0.05])
    memory = torch.zeros(2, 1, 1)
    assert greedy_decode(Bigram(probs), memory, None, SOS, EOS, max_len=5) == [[A] * 5] * 2
    assert beam_search(Bigram(probs), memory, None, SOS, EOS, beam_size=2, max_len=5) == [[B]] * 2
    # log p / length: -0.45 for B <eos> against -0.85 for A A A A A


def test_tiny_speech_model_overfits_a_batch_and_decodes_it_exactly():
    texts = ["one", "two three", "four", "nine five"]
    tokenizer = CharTokenizer.from_texts(texts)
    tokens, _ = tokenizer.encode_batch(texts, context_length=16)  # (B, T) <sos> text <eos> <pad>...
    lengths = torch.tensor([4000, 3200, 2400, 3600])
    waveforms = torch.randn(4, 4000) * (torch.arange(4000) < lengths[:, None])
    encoder = AudioEncoder(AudioEncoderConfig(max_frames=16, num_masks=0,
                                              transformer=dict(dim=32, depth=1, num_heads=2)))
    decoder = TextDecoder(TextConfig(tokenizer.vocab_size, 16, transformer=dict(dim=32, depth=1, num_heads=2)),
                          memory_dim=32)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=3e-3)
    for step in range(300):
        memory, mask = encoder(waveforms, lengths)
        logits = decoder(tokens[:, :-1], memory, mask)
        loss = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], ignore_index=tokenizer.pad)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    encoder.eval()
    memory, mask = encoder(waveforms, lengths)
    greedy = greedy_decode(decoder, memory, mask, tokenizer.sos, tokenizer.eos, max_len=16)
    assert [tokenizer.decode(seq) for seq in greedy] == texts
    assert beam_search(decoder, memory, mask, tokenizer.sos, tokenizer.eos, beam_size=3, max_len=16) == greedy
