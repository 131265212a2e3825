"""``--quantization 4bit|8bit`` for inference: the served model holds bitsandbytes layers and answers over the
API as the directly loaded quantised backend does; a merged MoE keeps its fused 3-D experts in full precision."""

from __future__ import annotations

import httpx
import pytest
import torch

from moesaic.backends.base import BackendOptions, GenerationParams
from moesaic.backends.quantization import quantization_report
from moesaic.backends.registry import load_backend
from moesaic.errors import ConfigError
from moesaic.inputs.messages import Turn

pytest.importorskip("bitsandbytes")


def _png_data_url() -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_quantised_serve_path_answers(ft_model) -> None:  # noqa: ANN001
    from moesaic.serve.app import create_app
    from moesaic.serve.settings import ServeConfig
    from moesaic.testing.server import running

    folder = str(ft_model("idefics3"))
    app = create_app(ServeConfig(model=folder, served_model_name="q4", quantization="4bit"))
    backend = app.state.service.backend
    layers = {type(m).__name__ for m in backend.model.modules()}
    assert "Linear4bit" in layers
    report = quantization_report(backend.model)
    assert report.quantized_linear > 10 and report.full_precision_linear == ["lm_head"]
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": _png_data_url()}},
                                         {"type": "text", "text": "What colour?"}]}]
    with running(app) as url:
        out = httpx.post(f"{url}/v1/chat/completions", timeout=120,
                         json={"model": "q4", "messages": msgs, "max_tokens": 5, "temperature": 0}).json()
    answer = out["choices"][0]["message"]["content"]
    assert out["usage"]["completion_tokens"] >= 1
    from moesaic.inputs.messages import ChatMessage, resolve_messages

    turns = resolve_messages([ChatMessage.model_validate(m) for m in msgs], app.state.service.policy)
    assert backend.generate(turns, GenerationParams(max_new_tokens=5)).text == answer


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_quantised_logits_stay_close_to_full_precision(ft_model, bits: str) -> None:  # noqa: ANN001
    folder = str(ft_model("qwen3_vl"))
    prompt = [Turn(role="user", parts=("Describe the picture.",))]
    full = load_backend(folder, BackendOptions(dtype="float32"))
    quant = load_backend(folder, BackendOptions(dtype="float32", quantization=bits))
    kind = "Linear4bit" if bits == "4bit" else "Linear8bitLt"
    assert any(type(m).__name__ == kind for m in quant.model.modules())
    a, b = full.logits(prompt), quant.logits(prompt)  # (vocab,)
    assert 0 < float((a - b).abs().max()) < 0.5 * float(a.abs().max())
    assert float(torch.nn.functional.cosine_similarity(a, b, dim=0)) > 0.9


def test_merged_moe_quantises_attention_not_the_fused_experts(ft_model, tmp_path) -> None:  # noqa: ANN001
    from moesaic.moe.config import MergeConfig
    from moesaic.moe.merge import merge

    base = ft_model("qwen3_vl")
    out = tmp_path / "moe"
    merge(MergeConfig(base_model=str(base), experts=[{"source_model": str(base)}, {"source_model": str(base)}],
                      gate_mode="random", experts_per_token=1, output_architecture="qwen3_vl_moe", out=str(out)))
    backend = load_backend(str(out), BackendOptions(quantization="4bit"))
    model = backend.model
    experts = [(n, p) for n, p in model.named_parameters() if ".experts." in n]
    assert experts and all(p.dim() == 3 and p.dtype == torch.float32 for _, p in experts)
    attention = [m for n, m in model.named_modules() if n.endswith("self_attn.q_proj")]
    assert attention and all(type(m).__name__ == "Linear4bit" for m in attention)
    report = quantization_report(model)
    assert report.full_precision_params >= sum(p.numel() for _, p in experts)
    answer = backend.generate([Turn(role="user", parts=("hello",))], GenerationParams(max_new_tokens=3))
    assert answer.completion_tokens >= 1


def test_backends_that_cannot_quantise_say_so() -> None:
    with pytest.raises(ConfigError, match="cannot load 'starter' with quantization=4bit") as info:
        load_backend("starter", BackendOptions(quantization="4bit"))
    assert "drop --quantization" in (info.value.hint or "")


def test_ask_cli_takes_the_quantization_flag(ft_model, tmp_path, capsys) -> None:  # noqa: ANN001
    import json

    from PIL import Image

    from moesaic.ask import _BACKENDS
    from moesaic.cli import main

    image = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (220, 20, 20)).save(image)
    folder = str(ft_model("idefics3"))
    assert main(["ask", str(image), "What colour?", "--model", folder, "--quantization", "8bit", "--max-tokens", "4",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == folder
    loaded = [b for key, b in _BACKENDS.items() if key[0] == folder and key[-1] == "8bit"]
    assert loaded and any(type(m).__name__ == "Linear8bitLt" for m in loaded[0].model.modules())
    assert main(["ask", str(image), "What colour?", "--quantization", "2bit"]) == 2
    assert "quantization" in capsys.readouterr().err


def test_vllm_engine_gets_in_flight_4bit_and_refuses_8bit(tmp_path) -> None:  # noqa: ANN001
    import json

    from moesaic.serve.settings import ServeConfig
    from moesaic.serve.vllm import vllm_command

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    cmd = vllm_command(ServeConfig(model=str(tmp_path), engine="vllm", quantization="4bit"), 5000)
    assert cmd[cmd.index("--quantization") + 1] == "bitsandbytes"
    assert "--quantization" not in vllm_command(ServeConfig(model=str(tmp_path), engine="vllm"), 5000)
    with pytest.raises(ConfigError, match="8-bit"):
        vllm_command(ServeConfig(model=str(tmp_path), engine="vllm", quantization="8bit"), 5000)
