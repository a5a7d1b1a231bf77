"""Whisper (OpenAI and Hugging Face formats) -> SpeechToText: parity on tiny random reference models."""

import pytest
import torch
import torchaudio.functional as AF

whisper = pytest.importorskip("whisper")
transformers = pytest.importorskip("transformers")

from safetensors.torch import save_file  # noqa: E402
from whisper.model import ModelDimensions, Whisper  # noqa: E402

from multimodal.data.speech_synth import SYNTH_RATE, synthesize, variants  # noqa: E402
from multimodal.encoders.audio import LogMel  # noqa: E402
from multimodal.encoders.text import TextDecoder, greedy_decode  # noqa: E402
from multimodal.errors import InputError  # noqa: E402
from multimodal.interop.whisper import load_whisper  # noqa: E402
from multimodal.models import SpeechToText  # noqa: E402
from multimodal.tokenizers import WhisperTokenizer  # noqa: E402

DIM, HEADS, LAYERS, VOCAB = 64, 2, 2, 51865


def openai_reference() -> Whisper:
    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=DIM, n_audio_head=HEADS,
                           n_audio_layer=LAYERS, n_vocab=VOCAB, n_text_ctx=448, n_text_state=DIM,
                           n_text_head=HEADS, n_text_layer=LAYERS)
    model = Whisper(dims).eval()
    with torch.no_grad():  # Whisper's own init leaves biases and out projections at zero: make them count
        for name, p in model.named_parameters():
            # (decoder.positional_embedding is left uninitialised by Whisper; the encoder's is a buffer)
            p.normal_(std=1.0 if "token_embedding" in name else 0.1)
    return model


def hf_reference():
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        vocab_size=VOCAB, num_mel_bins=80, d_model=DIM, encoder_layers=LAYERS, decoder_layers=LAYERS,
        encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=4 * DIM,
        decoder_ffn_dim=4 * DIM, max_source_positions=1500, max_target_positions=448)
    model = transformers.WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" not in name and "embed_tokens" not in name and "proj_out" not in name:
                p.normal_(std=0.1)
        model.model.decoder.embed_tokens.weight.normal_(std=1.0)  # proj_out is tied to it
    return model


@pytest.fixture(scope="module")
def clip_mel():
    """A synthesized spoken sentence at 16 kHz, its log-mel (ours), padded to Whisper's 30 s like Whisper."""
    audio = torch.from_numpy(synthesize("seven three nine one", variants()[0])).float()
    audio = AF.resample(audio, SYNTH_RATE, 16_000)
    padded = torch.nn.functional.pad(audio, (0, 480_000 - audio.shape[0]))
    ours, _ = LogMel()(padded[None])
    reference = whisper.log_mel_spectrogram(padded)
    return audio, ours, reference


def save(state: dict, path) -> None:
    state = {k: v.detach().clone().contiguous() for k, v in state.items()}  # tied tensors: one copy each
    save_file(state, path) if path.suffix == ".safetensors" else torch.save(state, path)


def reference_greedy(step, prompt: list[int], eot: int, max_len: int) -> list[int]:
    """A plain argmax loop on the reference decoder, the whole sequence fed at every step."""
    tokens = list(prompt)
    for _ in range(max_len):
        token = int(step(torch.tensor([tokens]))[0, -1].argmax())
        if token == eot:
            break
        tokens.append(token)
    return tokens[len(prompt):]


def test_our_log_mel_is_whispers(clip_mel):
    _, ours, reference = clip_mel
    assert (ours[0] - reference).abs().max() <= 1e-4


@pytest.mark.parametrize("fmt,suffix", [("openai", ".pt"), ("openai", ".safetensors"), ("hf", ".safetensors"),
                                        ("hf", ".bin")])
def test_whisper_encoder_logits_and_greedy_tokens_match(fmt, suffix, clip_mel, tmp_path):
    torch.set_num_threads(1)
    reference = openai_reference() if fmt == "openai" else hf_reference()
    path = tmp_path / f"whisper{suffix}"
    save(reference.state_dict(), path)
    model = load_whisper(path, num_heads=HEADS)
    assert isinstance(model, SpeechToText)
    mel = clip_mel[2][None]  # Whisper's own log-mel of the clip, (1, 80, 3000)
    prompt = model.tokenizer.prompt
    tokens = torch.tensor([prompt + model.tokenizer.encode(" seven three")])
    with torch.no_grad():
        if fmt == "openai":
            encoded = reference.encoder(mel)
            logits = reference.decoder(tokens, encoded)
            step = lambda t: reference.decoder(t, encoded)  # noqa: E731
        else:
            out = reference(input_features=mel, decoder_input_ids=tokens)
            encoded, logits = out.encoder_last_hidden_state, out.logits
            step = lambda t: reference(encoder_outputs=(encoded,), decoder_input_ids=t).logits  # noqa: E731
        features, _ = model.encoder.forward_features(mel)
        ours = TextDecoder.forward(model.decoder, tokens, features)
    assert (features - encoded).abs().max() <= 1e-4
    assert (ours - logits).abs().max() <= 1e-4
    assert logits.abs().max() > 1e-1
    expected = reference_greedy(step, prompt, model.tokenizer.eos, max_len=12)
    decoded = greedy_decode(model.decoder, features, None, model.tokenizer.sos, model.tokenizer.eos, max_len=12)[0]
    assert decoded == expected and len(expected) > 0


def test_transcribe_runs_on_a_converted_checkpoint(clip_mel, tmp_path):
    save(openai_reference().state_dict(), tmp_path / "tiny.pt")
    model = load_whisper(tmp_path / "tiny.pt", num_heads=HEADS)
    audio = clip_mel[0]
    model.config.decoder.context_length = 12  # a short context: random weights never say <|endoftext|>
    model.decoder.cfg.context_length = 12
    text = model.transcribe(audio).text
    beam = model.transcribe(audio, beam_size=2).text
    assert isinstance(text, str) and isinstance(beam, str)
    from multimodal.inference.transcribe import transcribe_waveforms
    (result,) = transcribe_waveforms(model, [audio], ["clip"], quiet=True)
    assert result["text"] == text


def test_hf_whisper_model_without_the_model_prefix(tmp_path):
    reference = hf_reference()
    save({k.removeprefix("model."): v for k, v in reference.state_dict().items() if k != "proj_out.weight"},
         tmp_path / "whisper_model.safetensors")
    model = load_whisper(tmp_path / "whisper_model.safetensors", num_heads=HEADS)
    mel = torch.randn(1, 80, 3000)
    with torch.no_grad():
        expected = reference.model.encoder(mel).last_hidden_state
        assert (model.encoder.forward_features(mel)[0] - expected).abs().max() <= 1e-4


def test_whisper_tokenizer():
    tok = WhisperTokenizer()
    assert tok.vocab_size == VOCAB and tok.prompt[0] == tok.sos and len(tok.prompt) == 4
    ids = tok.encode(" seven three nine one")
    assert tok.decode([*tok.prompt, *ids, tok.eos]) == "seven three nine one"
    assert WhisperTokenizer(**{k: v for k, v in tok.to_dict().items() if k != "type"}).prompt == tok.prompt
    assert WhisperTokenizer(multilingual=False).vocab_size == 51864


def test_mismatched_whisper_weights_are_refused(tmp_path):
    state = openai_reference().state_dict()
    del state["encoder.blocks.0.attn_ln.weight"]
    state["decoder.blocks.1.extra"] = torch.zeros(1)
    state["decoder.blocks.0.mlp.2.bias"] = torch.zeros(5)
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(InputError) as error:
        load_whisper(tmp_path / "broken.pt", num_heads=HEADS)
    message = str(error.value)
    assert "broken.pt" in message and "encoder.transformer.blocks.0.norm1.weight" in message
    assert "decoder.transformer.blocks.1.extra" in message and "decoder.transformer.blocks.0.mlp.3.bias (5,) vs (64,)" in message
