"""``moesaic ask``: the Python function and the CLI, on real photos and rendered text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from moesaic.ask import AskConfig, AskResult, ask
from moesaic.errors import ImageError, MoesaicError, URLPolicyError

skdata = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import matplotlib

    folder = tmp_path_factory.mktemp("photos")
    out = {"coffee": folder / "coffee.jpg", "chelsea": folder / "chelsea.png", "sign": folder / "sign.png"}
    Image.fromarray(skdata.coffee()).save(out["coffee"], quality=92)
    Image.fromarray(skdata.chelsea()).save(out["chelsea"])
    font = ImageFont.truetype(str(Path(matplotlib.__file__).parent / "mpl-data/fonts/ttf/DejaVuSans.ttf"), 30)
    sign = Image.new("RGB", (420, 120), "white")
    draw = ImageDraw.Draw(sign)
    draw.text((14, 12), "CLOSED ON MONDAY", fill="black", font=font)
    draw.text((14, 64), "Open 9 to 5", fill=(20, 20, 120), font=font)
    sign.save(out["sign"])
    return out


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MOESAIC_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "moesaic.cli", "ask", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_config_positionals_and_defaults() -> None:
    cfg = AskConfig.load(None, {"image": "x.png"})
    assert AskConfig.positional == ("image", "question")
    assert (cfg.question, cfg.model, cfg.route, cfg.max_tokens, cfg.endpoint) == (
        "What is in this image?", "starter", "chat", 128, None)


def test_ask_function_names_espresso_and_cat(photos: dict[str, Path]) -> None:
    coffee = ask(AskConfig(image=str(photos["coffee"])))
    assert isinstance(coffee, AskResult) and "espresso" in coffee.answer
    assert coffee.model == "starter" and coffee.experts == ["tagger", "ocr", "colors"]
    assert coffee.render() == coffee.answer and coffee.latency_s > 0
    assert coffee.details["images"][0]["tags"][0]["label"] == "espresso"
    cat = ask(AskConfig(image=str(photos["chelsea"]), question="What animal is this?"))
    assert "cat" in cat.answer and cat.experts == ["tagger"]


def test_ask_function_reads_text(photos: dict[str, Path]) -> None:
    result = ask(AskConfig(image=str(photos["sign"]), question="What does the sign say?"))
    assert result.answer == 'The text reads: "CLOSED ON MONDAY" / "Open 9 to 5".'


def test_ask_errors_are_moesaic_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError):
        ask(AskConfig(image=str(tmp_path / "missing.png")))
    with pytest.raises(URLPolicyError):
        ask(AskConfig(image="ftp://example.com/cat.png"))
    with pytest.raises(MoesaicError) as err:
        ask(AskConfig(question="What is the capital of France?"))
    assert "no image" in err.value.message


def test_cli_answers_and_json(photos: dict[str, Path]) -> None:
    plain = run_cli(str(photos["chelsea"]), "What is this?")
    assert plain.returncode == 0, plain.stderr
    assert "cat" in plain.stdout and plain.stdout.strip().endswith(").")
    as_json = run_cli(str(photos["coffee"]), "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert "espresso" in data["answer"] and data["model"] == "starter"
    assert data["experts"] == ["tagger", "ocr", "colors"] and data["latency_s"] > 0
    assert data["question"] == "What is in this image?"


def test_cli_reads_text(photos: dict[str, Path]) -> None:
    out = run_cli(str(photos["sign"]), "read the text")
    assert out.returncode == 0, out.stderr
    assert "CLOSED ON MONDAY" in out.stdout and "Open 9 to 5" in out.stdout


@pytest.mark.parametrize("ref", ["/no/such/photo.jpg", "ftp://example.com/a.png", "file:///etc/passwd"])
def test_cli_errors_are_one_line_exit_2(ref: str) -> None:
    out = run_cli(ref, "what is it?")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and out.stdout == ""


def test_endpoint_and_speech_are_delegated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import moesaic.serve.client as client
    import moesaic.tasks.speech as speech

    seen: dict[str, object] = {}

    def fake_endpoint(config: AskConfig, on_delta: object = None) -> AskResult:
        seen["config"] = config
        return AskResult(answer="remote answer", model="served", experts=["ocr"], latency_s=0.01)

    def fake_speak(text: str, path: str, language: str = "en") -> Path:
        Path(path).write_bytes(b"RIFF")
        seen["spoken"] = (text, language)
        return Path(path)

    monkeypatch.setattr(client, "ask_endpoint", fake_endpoint)
    monkeypatch.setattr(speech, "transcribe", lambda path: "  what does it say ")
    monkeypatch.setattr(speech, "speak", fake_speak)
    wav = tmp_path / "answer.wav"
    result = ask(AskConfig(image="https://example.com/a.png", endpoint="http://127.0.0.1:9", audio="q.wav",
                           speak=str(wav), language="fr"))
    assert seen["config"].question == "what does it say"  # type: ignore[attr-defined]
    assert (result.answer, result.model, result.experts) == ("remote answer", "served", ["ocr"])
    assert result.transcript == "  what does it say " and result.question == "what does it say"
    assert seen["spoken"] == ("remote answer", "fr") and result.speech_path == str(wav) and wav.read_bytes() == b"RIFF"


def test_starter_llm_variant_resolves_to_the_starter_backend() -> None:
    from moesaic.ask import _backend
    from moesaic.experts.backend import StarterBackend

    made = _backend(AskConfig(model="starter:llm"))
    assert isinstance(made, StarterBackend) and made.writer == "llm"
    assert _backend(AskConfig()).writer == "template"  # type: ignore[attr-defined]



class _Scripted:
    """A backend whose stream yields fixed pieces (the tiny models' random bytes stream as one block)."""

    def stream(self, prompt, params):  # noqa: ANN001, ANN201
        from moesaic.backends.base import Answer, StreamChunk

        for piece in ("a red ", "square ", "on white"):
            yield StreamChunk(text=piece)
        yield StreamChunk(answer=Answer(text="a red square on white", model="scripted"))


def test_stream_forwards_each_piece_in_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import moesaic.ask as ask_module

    monkeypatch.setattr(ask_module, "_backend", lambda config: _Scripted())
    image = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    pieces: list[str] = []
    result = ask(AskConfig(image=str(image), question="what?", stream=True), on_delta=pieces.append)
    assert pieces == ["a red ", "square ", "on white"] and result.answer == "a red square on white"


def test_stream_of_a_real_model_joins_to_its_greedy_answer(tiny_model_dir, tmp_path: Path) -> None:  # noqa: ANN001
    image = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    config = AskConfig(image=str(image), question="what colour?", model=str(tiny_model_dir("idefics3")),
                       max_tokens=6)
    whole = ask(config)
    pieces: list[str] = []
    streamed = ask(config.model_copy(update={"stream": True}), on_delta=pieces.append)
    assert pieces and "".join(pieces) == streamed.answer == whole.answer


def test_cli_stream_prints_the_pieces_then_one_newline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       capsys) -> None:  # noqa: ANN001
    import moesaic.ask as ask_module
    from moesaic.cli import main

    monkeypatch.setattr(ask_module, "_backend", lambda config: _Scripted())
    image = tmp_path / "blue.png"
    Image.new("RGB", (32, 32), (20, 30, 220)).save(image)
    assert main(["ask", str(image), "what?", "--stream"]) == 0
    assert capsys.readouterr().out == "a red square on white\n"
