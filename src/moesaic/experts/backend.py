"""``StarterBackend``: the offline ``"starter"`` model — router, experts, writer.

For each request: the router picks experts from the question (:mod:`moesaic.experts.router`), each image
goes through the chosen experts (tagger, OCR, colours), and a writer composes the answer from the
findings (:mod:`moesaic.experts.writer`; the grounded template by default). ``Answer.experts`` lists the
experts that ran; ``Answer.details`` carries the route and every image's raw findings.

Token counts are whitespace-separated words (there is no tokenizer behind the template writer), and
``max_new_tokens`` cuts the answer at that many words (``finish_reason="length"``).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from moesaic.backends.base import Answer, Backend, BackendOptions, GenerationParams, apply_stop
from moesaic.errors import InputError
from moesaic.experts.findings import ImageFindings
from moesaic.experts.router import Route, Router
from moesaic.experts.writer import WriterName, grounded_answer, llm_answer

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from moesaic.inputs.messages import Turn

__all__ = ["StarterBackend", "run_experts"]

log = logging.getLogger(__name__)

MAX_IMAGES = 8


def _read_text(image: "Image.Image") -> list[Any]:
    from moesaic.experts.ocr import OCR

    return OCR.shared().read(image)


def run_experts(image: "Image.Image", experts: tuple[str, ...], *, top_k: int = 5, colors_k: int = 3) -> ImageFindings:
    """Run the named experts (``tagger``, ``ocr``, ``colors``) on one image.

    OCR (ONNX Runtime, which releases the GIL) runs in a worker thread while the tagger (and, when cold,
    the torch import) and the colours run here: on 2 cores a cold generic question gets ~2 s faster.
    """
    tags = colors = text = backdrop = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="moesaic-ocr") as pool:
        pending = pool.submit(_read_text, image) if "ocr" in experts else None
        if "tagger" in experts:
            from moesaic.experts.tagger import Tagger

            tags = Tagger.shared().tag(image, top_k=top_k)
        if "colors" in experts:
            from moesaic.experts.colors import subject_colors

            colors, backdrop = subject_colors(image, k=colors_k)  # a plain backdrop is named, not counted
        if pending is not None:
            text = pending.result()
    return ImageFindings.from_experts(tags=tags, colors=colors, text=text, backdrop=backdrop)


def _question_and_images(prompt: list["Turn"]) -> tuple[str, list["Image.Image"]]:
    users = [t for t in prompt if t.role == "user"]
    if not users:
        raise InputError("the conversation has no user message", "send at least one message with role 'user'")
    images = [img for t in users for img in t.images]
    return users[-1].text.strip(), images


def _truncate(text: str, params: GenerationParams) -> tuple[str, str]:
    text, stopped = apply_stop(text, params.stop)
    words = text.split()
    if len(words) > params.max_new_tokens:
        return " ".join(words[: params.max_new_tokens]), "length"
    return text.strip(), "stop"


class StarterBackend(Backend):
    """Offline experts behind the backend protocol. ``writer="llm"`` rewrites the facts with SmolLM2."""

    name = "starter"
    supports_images = True
    max_images = MAX_IMAGES
    can_stream = False
    can_batch = False

    def __init__(
        self,
        writer: WriterName = "template",
        *,
        llm_model: str = "smollm2",
        router: Router | None = None,
        top_k: int = 5,
        colors_k: int = 3,
    ) -> None:
        self.writer = writer
        self.llm_model = llm_model
        self.router = router or Router()
        self.top_k = top_k
        self.colors_k = colors_k

    @classmethod
    def create(cls, model: str = "starter", options: BackendOptions | None = None) -> "StarterBackend":
        """What the registry calls for ``model="starter"`` (``"starter:llm"`` picks the LLM writer)."""
        _, _, variant = model.partition(":")
        if variant not in ("", "template", "llm"):
            raise InputError(f"unknown starter writer {variant!r} in model {model!r}", "use 'starter' or 'starter:llm'")
        return cls(writer="llm" if variant == "llm" else "template")

    def generate(self, prompt: list["Turn"], params: GenerationParams | None = None) -> Answer:
        params = params or GenerationParams()
        question, images = _question_and_images(prompt)
        if not images:
            raise InputError(
                "the starter experts answer questions about images, and this request has no image",
                "attach an image (an image_url part, or 'image' in the plain form), or choose a VLM with --model",
            )
        if len(images) > MAX_IMAGES:
            raise InputError(f"{len(images)} images given; the starter experts take at most {MAX_IMAGES}",
                             f"send {MAX_IMAGES} images or fewer")
        route = self.router.route(question)
        started = time.perf_counter()
        findings = [run_experts(img, route.experts, top_k=self.top_k, colors_k=self.colors_k) for img in images]
        text, used_llm = self._write(question, route, findings, params)
        text, finish = _truncate(text, params)
        ran = [e for e in ("tagger", "ocr", "colors") if any(e in f.experts() for f in findings)]
        details: dict[str, Any] = {
            "route": {"experts": list(route.experts), "reason": route.reason, "scores": route.scores},
            "writer": "llm" if used_llm else "template",
            "images": [f.model_dump(mode="json") for f in findings],
            "experts_s": round(time.perf_counter() - started, 3),
        }
        return Answer(
            text=text,
            model="starter",
            prompt_tokens=len(question.split()),
            completion_tokens=len(text.split()),
            finish_reason=finish,  # type: ignore[arg-type]
            experts=ran + (["llm"] if used_llm else []),
            details=details,
        )

    def _write(
        self, question: str, route: Route, findings: list[ImageFindings], params: GenerationParams
    ) -> tuple[str, bool]:
        if self.writer != "llm":
            return grounded_answer(question, route, findings), False
        from moesaic.experts.llm import CausalLMWriter

        decoding: dict[str, Any] = {}
        if not params.greedy:
            import torch

            if params.seed is not None:
                torch.manual_seed(params.seed)
            decoding = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
        writer = CausalLMWriter.shared(self.llm_model)
        limit = min(params.max_new_tokens, 96)
        return llm_answer(question, route, findings, writer, max_new_tokens=limit, **decoding), True
