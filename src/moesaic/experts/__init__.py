"""Offline starter experts: real weights that ship inside installed packages, no model hub needed.

Each expert loads lazily and once (``Expert.shared()`` is cached and thread-safe):

- :mod:`~moesaic.experts.tagger` — EfficientNet-Lite0 ImageNet-1k tags (``Tagger``, ``Tag``)
- :mod:`~moesaic.experts.ocr` — rapidocr PP-OCRv6 text lines in reading order (``OCR``, ``TextLine``)
- :mod:`~moesaic.experts.colors` — dominant colours named from a fixed palette (``dominant_colors``)
- :mod:`~moesaic.experts.embed` — MiniLM-L6 sentence embeddings (``Embedder``)
- :mod:`~moesaic.experts.llm` — a small causal LM writer, SmolLM2-135M GGUF by default (``CausalLMWriter``)
- :mod:`~moesaic.experts.router` — which experts a question needs (``Router``)
- :mod:`~moesaic.experts.writer` — grounded answers from the findings, optional LLM rewrite
- :mod:`~moesaic.experts.backend` — ``StarterBackend``, the ``"starter"`` model of the backend registry

Nothing heavy is imported here; import the submodule you need.
"""

__all__ = ["tagger", "ocr", "colors", "embed", "llm", "router", "writer", "backend"]
