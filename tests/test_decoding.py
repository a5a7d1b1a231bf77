import pytest
import torch
import torch.nn.functional as F
from torch import nn

from multimodal.encoders.audio import AudioEncoder, AudioEncoderConfig
from multimodal.encoders.text import TextConfig, TextDecoder, beam_search, greedy_decode
from multimodal.nn import KVCache
from multimodal.tokenizers import CharTokenizer

SOS, EOS = 1, 2
CFG = TextConfig(vocab_size=12, context_length=16, transformer=dict(dim=32, depth=2, num_heads=4))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: a second thread only adds waiting, a lot of it on a busy two-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fit(params, loss_fn, steps: int, lr: float, until: float = 0.0) -> None:
    optimizer = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < until:
            break


def teacher_forced_loss(decoder, tokens, memory, mask, pad: int = -100):
    return F.cross_entropy(decoder(tokens[:, :-1], memory, mask).transpose(1, 2), tokens[:, 1:], ignore_index=pad)


def half_trained_decoder():
    """A decoder given 8 steps on three targets of different lengths: unsure enough that beams swap
    places and end at different steps, and that beam search and greedy decoding disagree."""
    torch.manual_seed(0)
    decoder = TextDecoder(CFG, memory_dim=24)
    memory, mask = torch.randn(3, 10, 24), torch.ones(3, 10, dtype=torch.bool)
    mask[1, 6:] = False
    targets = torch.tensor([[SOS, 11, 3, 5, EOS, EOS, EOS], [SOS, 4, 3, 11, 5, 9, EOS], [SOS, 3, 8, 6, 11, 5, 11]])
    fit(decoder.parameters(), lambda: teacher_forced_loss(decoder, targets, memory, mask), steps=8, lr=1e-2)
    return decoder.eval(), memory, mask


def test_cached_step_by_step_decoding_equals_full_forward():
    decoder, memory, mask = half_trained_decoder()
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


def reference_beam_search(decoder, memory, mask, K: int, max_len: int) -> list[int]:
    """beam_search's rules for one utterance written plainly: no batch, no cache, python lists."""
    live, ended = [(0.0, [])], []  # (log p, tokens)
    for step in range(1, max_len + 1):
        prefixes = torch.tensor([[SOS, *seq] for _, seq in live])
        logp = decoder(prefixes, memory.expand(len(live), -1, -1), mask.expand(len(live), -1))[:, -1]
        logp = logp.log_softmax(-1).tolist()
        candidates = sorted(((s + lp, seq, t) for (s, seq), row in zip(live, logp) for t, lp in enumerate(row)),
                            key=lambda c: -c[0])
        live = []
        for s, seq, t in candidates:  # <eos> ends a hypothesis until K continuing ones are found
            if t == EOS:
                ended.append((s / step, seq))
            elif len(live) < K:
                live.append((s, seq + [t]))
            else:
                break
        if len(ended) >= K and live[0][0] / step < sorted(ended)[-K][0]:
            break
    else:
        ended += [(s / max_len, seq) for s, seq in live]
    return max(ended)[1]


def test_beam_search_equals_a_plain_reference():
    decoder, memory, mask = half_trained_decoder()
    greedy = greedy_decode(decoder, memory, mask, SOS, EOS, max_len=8)
    assert beam_search(decoder, memory, mask, SOS, EOS, beam_size=1, max_len=8) == greedy
    for max_len in (4, 8):
        expected = [reference_beam_search(decoder, memory[b:b + 1], mask[b:b + 1], 3, max_len) for b in range(3)]
        assert beam_search(decoder, memory, mask, SOS, EOS, beam_size=3, max_len=max_len) == expected
    assert expected != greedy and len(set(map(len, expected))) > 1  # a case where the search matters


class Bigram(nn.Module):
    """A decoder whose next-token distribution depends on the last token only (it ignores memory and cache)."""

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.probs = probs

    def forward(self, tokens, memory, memory_mask=None, cache=None):
        return self.probs.log()[tokens]  # (B, T, V)

    def score(self, seq: list[int], max_len: int) -> float:
        """log p / length, <eos> included unless the sequence was cut at max_len."""
        path = [SOS, *seq] + ([EOS] if len(seq) < max_len else [])
        return sum(self.probs[a, b].log().item() for a, b in zip(path, path[1:])) / (len(path) - 1)


def random_bigram(seed: int) -> Bigram:
    probs = torch.rand(8, 8, generator=torch.Generator().manual_seed(seed)) ** 3  # peaked rows
    probs[:, [0, SOS]] = 0  # never <pad> or <sos>
    return Bigram(probs / probs.sum(1, keepdim=True))


def test_beam_of_one_is_greedy_and_wider_beams_score_no_lower():
    """Not a theorem for any beam search, but it holds on these models, where stopping at the first K
    ended hypotheses (Whisper's rule) loses to greedy decoding on several."""
    memory, better = torch.zeros(1, 1, 1), 0
    for seed in range(60):
        model = random_bigram(seed)
        greedy, = greedy_decode(model, memory, None, SOS, EOS, max_len=10)
        assert beam_search(model, memory, None, SOS, EOS, beam_size=1, max_len=10) == [greedy]
        if len(greedy) < 10:  # a cut sequence misses the cost of its <eos>: no fair comparison
            beam, = beam_search(model, memory, None, SOS, EOS, beam_size=3, max_len=10)
            assert model.score(beam, 10) >= model.score(greedy, 10) - 1e-6, seed
            better += model.score(beam, 10) > model.score(greedy, 10) + 1e-6
    assert better > 10


def test_beam_search_escapes_the_greedy_trap():
    A, B = 3, 4
    probs = torch.full((5, 5), 0.2)  # rows: the last token; columns: the next one. 0 is <pad>.
    probs[SOS] = torch.tensor([0, 0, 0, 0.55, 0.45])
    probs[A] = torch.tensor([0, 0, 0.3, 0.4, 0.3])  # A is likelier first, but nothing ends well after it
    probs[B] = torch.tensor([0, 0, 0.9, 0.05, 0.05])
    model, memory = Bigram(probs), torch.zeros(2, 1, 1)  # a batch of two
    assert greedy_decode(model, memory, None, SOS, EOS, max_len=5) == [[A] * 5] * 2
    assert beam_search(model, memory, None, SOS, EOS, beam_size=2, max_len=5) == [[B]] * 2
    assert model.score([B], 5) == pytest.approx(-0.45, abs=0.01) and model.score([A] * 5, 5) < -0.8


def test_tiny_speech_model_overfits_a_batch_and_decodes_it_exactly():
    torch.manual_seed(0)
    texts = ["one", "two three", "four", "nine five"]
    tokenizer = CharTokenizer.from_texts(texts)
    tokens, _ = tokenizer.encode_batch(texts, context_length=16)  # (B, T) <sos> text <eos> <pad>...
    lengths = torch.tensor([4000, 3200, 2400, 3600])
    waveforms = torch.randn(4, 4000) * (torch.arange(4000) < lengths[:, None])
    encoder = AudioEncoder(AudioEncoderConfig(max_frames=16, num_masks=0,
                                              transformer=dict(dim=32, depth=1, num_heads=2)))
    decoder = TextDecoder(TextConfig(tokenizer.vocab_size, 16, transformer=dict(dim=32, depth=1, num_heads=2)),
                          memory_dim=32)
    fit([*encoder.parameters(), *decoder.parameters()],
        lambda: teacher_forced_loss(decoder, tokens, *encoder(waveforms, lengths), pad=tokenizer.pad),
        steps=300, lr=3e-3, until=0.01)
    encoder.eval(), decoder.eval()
    memory, mask = encoder(waveforms, lengths)
    greedy = greedy_decode(decoder, memory, mask, tokenizer.sos, tokenizer.eos, max_len=16)
    assert [tokenizer.decode(seq) for seq in greedy] == texts
    assert beam_search(decoder, memory, mask, tokenizer.sos, tokenizer.eos, beam_size=3, max_len=16) == greedy
