"""describe-product: attributes from the experts or a VLM's JSON, grounded descriptions, violations."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from scripted import ScriptedBackend

from moesaic.errors import ConfigError
from moesaic.experts.colors import foreground_pixels
from moesaic.tasks.base import run_task
from moesaic.tasks.product import (
    DescribeProductConfig,
    ProductAttributes,
    ProductTask,
    SchemaMismatchError,
    describe_product,
    find_violations,
    parse_attributes,
)
from moesaic.tasks.product.starter import product_colours
from moesaic.tasks.product.writer import load_template, render_messages, write_description
from moesaic.tasks.samples import draw_product


@pytest.fixture(scope="module")
def shirts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("shirts")
    out = {}
    for colour in ("red", "blue", "green"):
        out[colour] = folder / f"{colour}.png"
        draw_product("t-shirt", colour).save(out[colour])
    return out


@pytest.mark.parametrize("colour", ["red", "blue", "green"])
def test_starter_attributes_and_description_name_the_colour(shirts: dict[str, Path], colour: str) -> None:
    result = describe_product(DescribeProductConfig(image=str(shirts[colour]), writer="template", ocr=False))
    attrs = result.attributes
    assert (attrs.category, attrs.item_type, attrs.colours, attrs.source) == ("top", "t-shirt", [colour], "experts")
    assert result.description == f"A {colour} t-shirt."
    assert result.violations == [] and not result.fallback_used
    assert result.template_version == "product-description/1"
    ProductAttributes.model_validate_json(attrs.model_dump_json())  # schema-valid JSON round trip


def test_backdrop_is_left_out_of_product_colours(shirts: dict[str, Path]) -> None:
    from PIL import Image

    img = Image.open(shirts["red"])
    split = foreground_pixels(img)
    assert split is not None and 0.2 < len(split[0]) / (img.width * img.height) < 0.8
    assert product_colours(img) == ["red"]


def test_violations_flag_invented_attributes() -> None:
    attrs = ProductAttributes(category="top", item_type="t-shirt", colours=["navy blue", "white"])
    found = find_violations("A navy t-shirt in soft cotton with red and grey stripes, like a dress.", attrs)
    assert [(v.word, v.kind) for v in found] == [("cotton", "material"), ("red", "colour"), ("grey", "colour"),
                                                 ("dress", "type")]
    assert find_violations("A navy blue and white t-shirt.", attrs) == []


def test_parse_attributes_repairs_common_json_faults() -> None:
    text = "Sure! ```json\n{'color': 'Red and white', 'type': 'T-Shirt', 'category': 'Top', 'material': 'none',}\n```"
    attrs = parse_attributes(text)
    assert attrs.colours == ["red", "white"] and attrs.item_type == "t-shirt" and attrs.category == "top"
    assert attrs.material is None and attrs.source == "vlm"


def test_schema_mismatch_is_a_clear_error() -> None:
    with pytest.raises(SchemaMismatchError, match="category"):
        parse_attributes('{"category": "spaceship", "item_type": "x", "colours": ["red"]}')
    with pytest.raises(SchemaMismatchError, match="no JSON object"):
        parse_attributes("I think it is a red shirt.")
    with pytest.raises(SchemaMismatchError, match="colours"):
        parse_attributes('{"category": "top", "item_type": "shirt", "colours": []}')


def test_vlm_path_retries_once_with_the_schema_error(shirts: dict[str, Path]) -> None:
    backend = ScriptedBackend([
        '{"category": "shirt", "item_type": "t-shirt", "colours": ["red"]}',  # category not in the schema
        '{"category": "top", "item_type": "t-shirt", "colours": ["red"], "material": "cotton"}',
        "A red cotton t-shirt for every day.",
    ])
    cfg = DescribeProductConfig(image=str(shirts["red"]), model="scripted", writer="vlm")
    result = run_task(ProductTask, cfg, backend=backend)
    assert result.attributes.material == "cotton" and result.attributes.source == "vlm"
    assert "previous answer was invalid" in backend.prompts[1][0].text and "category" in backend.prompts[1][0].text
    writer_turns = backend.prompts[2]
    assert [t.role for t in writer_turns] == ["system", "user"] and not writer_turns[1].images
    assert "- material: cotton" in writer_turns[1].text
    assert result.description == "A red cotton t-shirt for every day." and result.violations == []


class _FakeOpenAI(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "body": body})
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": "A soft red wool t-shirt."}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def test_openai_writer_reports_invented_material(shirts: dict[str, Path]) -> None:
    server = HTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}/v1"
        cfg = DescribeProductConfig(image=str(shirts["red"]), writer="openai:shop-writer", endpoint=endpoint,
                                    ocr=False, on_violation="report")
        reported = describe_product(cfg)
        fallback = describe_product(cfg.model_copy(update={"on_violation": "fallback"}))
    finally:
        server.shutdown()
    sent = _FakeOpenAI.requests[0]
    assert sent["path"] == "/v1/chat/completions" and sent["body"]["model"] == "shop-writer"
    template = load_template()
    assert sent["body"]["messages"][0]["content"] == template.system
    assert "- colours: red" in sent["body"]["messages"][1]["content"]
    assert reported.description == "A soft red wool t-shirt." and not reported.fallback_used
    assert [(v.word, v.kind) for v in reported.violations] == [("wool", "material")]
    assert fallback.description == "A red t-shirt." and fallback.draft == "A soft red wool t-shirt."
    assert fallback.fallback_used and fallback.violations == reported.violations


def test_writer_errors_are_clear() -> None:
    attrs = ProductAttributes(category="top", item_type="t-shirt", colours=["red"])
    with pytest.raises(ConfigError, match="unknown writer"):
        write_description(attrs, "gpt-banana")
    with pytest.raises(ConfigError, match="--endpoint"):
        write_description(attrs, "openai:gpt-4o-mini")
    messages = render_messages(attrs, load_template())
    assert "red t-shirt" in messages[1]["content"]


@pytest.mark.slow
def test_smollm2_writer_is_checked_against_the_attributes(shirts: dict[str, Path]) -> None:
    result = describe_product(DescribeProductConfig(image=str(shirts["blue"]), writer="smollm2", ocr=False))
    assert result.attributes.colours == ["blue"] and result.writer == "smollm2"
    assert "blue" in result.description.lower()
    assert find_violations(result.description, result.attributes) == []
    if result.fallback_used:  # the small LM's draft was rejected for a reason the result names
        assert result.draft and (result.violations or result.missing)


def _tiny_causal_lm(path: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from moesaic.testing.tokenizers import bpe_tokenizer

    tok = bpe_tokenizer(["<pad>", "<s>", "</s>"], bos="<s>", eos="</s>", pad="<pad>")
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant:{% endif %}")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_any_causal_lm_writer_by_path(shirts: dict[str, Path], tmp_path: Path) -> None:
    from moesaic.experts.llm import CausalLMWriter

    lm = _tiny_causal_lm(tmp_path / "lm")
    cfg = DescribeProductConfig(image=str(shirts["green"]), writer=f"hf:{lm}", ocr=False, on_violation="report")
    result = describe_product(cfg)
    messages = render_messages(result.attributes, load_template())
    direct = CausalLMWriter.shared(str(lm)).complete(messages, max_new_tokens=96).strip().split("\n\n")[0].strip()
    assert result.description == direct and result.writer == f"hf:{lm}"
    assert result.violations == find_violations(direct, result.attributes)
    words = set(re.findall(r"[a-z]+", direct.lower()))
    assert ("green" in result.missing) == ("green" not in words)
