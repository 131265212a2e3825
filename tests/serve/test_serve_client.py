"""``ask_endpoint``: the client behind ``moesaic ask --endpoint`` against a real server."""

from __future__ import annotations

import pytest
from serve_helpers import ColorBackend, png_bytes, running

from moesaic.errors import ImageError
from moesaic.serve.app import create_app
from moesaic.serve.client import EndpointError, ask_endpoint, base_url, image_data_url
from moesaic.serve.settings import ServeConfig

ask = pytest.importorskip("moesaic.ask")


@pytest.fixture(scope="module")
def endpoint():
    with running(create_app(ServeConfig(model="colors", api_key="k3y"), ColorBackend(delay_s=0.01))) as url:
        yield url


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "blue.png"
    path.write_bytes(png_bytes((0, 0, 255)))
    return path


def config(**kw: object):
    return ask.AskConfig.model_validate({"question": "What colour?", "api_key": "k3y", **kw})


def test_chat_route_with_a_local_file(endpoint, photo):
    result = ask_endpoint(config(image=str(photo), endpoint=endpoint))
    assert result.answer == "blue about what colour?"
    assert result.experts == ["colors", "echo"] and result.model == "colors" and result.latency_s > 0
    assert result.finish_reason == "stop" and result.question == "What colour?"


def test_generation_settings_and_bare_base64_travel(endpoint, photo):
    import base64

    bare = base64.b64encode(photo.read_bytes()).decode()
    result = ask_endpoint(config(image=bare, endpoint=endpoint, max_tokens=2))
    assert result.answer == "blue about" and result.finish_reason == "length"
    sm = ask_endpoint(config(image=bare, endpoint=endpoint, max_tokens=2, route="invocations"))
    assert sm.answer == "blue about" and sm.finish_reason == "length"


def test_streaming_calls_on_delta_and_returns_the_whole_answer(endpoint, photo):
    deltas: list[str] = []
    result = ask_endpoint(config(image=str(photo), endpoint=endpoint + "/v1/", stream=True), on_delta=deltas.append)
    assert len(deltas) == 4 and "".join(deltas) == result.answer == "blue about what colour?"
    assert result.experts == ["colors", "echo"] and result.finish_reason == "stop"


def test_moesaic_ask_with_endpoint_goes_through_the_client(endpoint, photo):
    result = ask.ask(config(image=str(photo), endpoint=endpoint, question="Colour?"))
    assert result.answer == "blue about colour?" and result.experts == ["colors", "echo"]


def test_invocations_route(endpoint, photo):
    result = ask_endpoint(config(image=str(photo), endpoint=endpoint, route="invocations"))
    assert result.answer == "blue about what colour?" and result.experts == ["colors", "echo"]


def test_refusals_are_clear(endpoint, photo, tmp_path):
    with pytest.raises(EndpointError) as info:
        ask_endpoint(config(image=str(photo), endpoint=endpoint, api_key="wrong"))
    assert info.value.status == 401 and "API key is not valid" in info.value.message
    with pytest.raises(ImageError, match="does not exist"):
        ask_endpoint(config(image=str(tmp_path / "missing.png"), endpoint=endpoint))
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ImageError, match="not an image"):
        image_data_url(str(tmp_path / "notes.txt"))
    with pytest.raises(EndpointError, match="could not reach"):
        ask_endpoint(config(endpoint="http://127.0.0.1:9", question="hi"))


def test_data_urls_pass_through_and_endpoints_normalise(photo):
    url = image_data_url(str(photo))
    assert url.startswith("data:image/png;base64,") and image_data_url(url) == url
    assert base_url("http://h:1/v1/") == base_url("http://h:1") == "http://h:1"
