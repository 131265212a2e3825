"""What the experts found about one image: the raw material every writer (and ``Answer.details``) uses."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # pragma: no cover
    from moesaic.experts.colors import NamedColor
    from moesaic.experts.ocr import TextLine
    from moesaic.experts.tagger import Tag

__all__ = ["TagFinding", "ColorFinding", "TextFinding", "ImageFindings"]


class _Finding(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TagFinding(_Finding):
    label: str
    score: float


class ColorFinding(_Finding):
    name: str
    rgb: tuple[int, int, int]
    share: float


class TextFinding(_Finding):
    text: str
    score: float
    box: list[list[float]]


class ImageFindings(_Finding):
    """``None`` means the expert did not run; an empty list means it ran and found nothing."""

    tags: list[TagFinding] | None = None
    colors: list[ColorFinding] | None = None
    text: list[TextFinding] | None = None
    backdrop: str | None = None  # name of a plain background the colours leave out (product shots, signs)

    @classmethod
    def from_experts(
        cls,
        tags: "list[Tag] | None" = None,
        colors: "list[NamedColor] | None" = None,
        text: "list[TextLine] | None" = None,
        backdrop: str | None = None,
    ) -> "ImageFindings":
        return cls(
            backdrop=backdrop,
            tags=None if tags is None else [TagFinding(**asdict(t)) for t in tags],
            colors=None if colors is None else [ColorFinding(**asdict(c)) for c in colors],
            text=None if text is None else [TextFinding(**asdict(t)) for t in text],
        )

    def experts(self) -> list[str]:
        """Names of the experts that ran, in a fixed order."""
        ran = {"tagger": self.tags, "ocr": self.text, "colors": self.colors}
        return [name for name, value in ran.items() if value is not None]
