"""Stage 1 on the starter experts: ImageNet tags → category and item type, colour names of the product's
own pixels (the backdrop is separated by its border colour), OCR → visible text."""

from __future__ import annotations

from typing import TYPE_CHECKING


from moesaic.tasks.product.schema import ProductAttributes

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["IMAGENET_PRODUCTS", "attributes_from_experts", "product_colours", "product_type"]

# tagger label (first ImageNet synonym, as moesaic.experts.tagger names it) -> (category, item type)
IMAGENET_PRODUCTS: dict[str, tuple[str, str]] = {
    "jersey": ("top", "t-shirt"), "sweatshirt": ("top", "sweatshirt"), "cardigan": ("top", "cardigan"),
    "brassiere": ("top", "bra"), "maillot": ("top", "swimsuit"), "vestment": ("top", "tunic"),
    "blue jean": ("bottom", "jeans"), "miniskirt": ("bottom", "skirt"), "overskirt": ("bottom", "skirt"),
    "hoopskirt": ("bottom", "skirt"), "sarong": ("bottom", "sarong"), "swimming trunks": ("bottom", "swim shorts"),
    "gown": ("dress", "gown"), "abaya": ("dress", "abaya"), "kimono": ("dress", "kimono"),
    "academic gown": ("dress", "gown"), "pajama": ("dress", "pyjamas"),
    "trench coat": ("outerwear", "trench coat"), "fur coat": ("outerwear", "fur coat"),
    "lab coat": ("outerwear", "coat"), "poncho": ("outerwear", "poncho"), "cloak": ("outerwear", "cloak"),
    "suit of clothes": ("outerwear", "suit"), "bulletproof vest": ("outerwear", "vest"),
    "running shoe": ("footwear", "sneaker"), "Loafer": ("footwear", "loafer"), "sandal": ("footwear", "sandal"),
    "clog": ("footwear", "clog"), "cowboy boot": ("footwear", "boot"), "sock": ("footwear", "sock"),
    "backpack": ("bag", "backpack"), "purse": ("bag", "purse"), "mailbag": ("bag", "messenger bag"),
    "wallet": ("bag", "wallet"), "plastic bag": ("bag", "plastic bag"), "shopping basket": ("bag", "basket"),
    "sunglasses": ("accessory", "sunglasses"), "sunglass": ("accessory", "sunglasses"),
    "bow tie": ("accessory", "bow tie"), "Windsor tie": ("accessory", "tie"), "bolo tie": ("accessory", "tie"),
    "stole": ("accessory", "scarf"), "mitten": ("accessory", "mittens"), "cowboy hat": ("accessory", "hat"),
    "sombrero": ("accessory", "hat"), "poke bonnet": ("accessory", "bonnet"), "digital watch": ("accessory", "watch"),
    "apron": ("accessory", "apron"), "umbrella": ("accessory", "umbrella"),
}
MIN_TAG_SCORE = 0.05


def product_colours(image: "Image.Image", k: int = 2) -> list[str]:
    """Colour names of the product, largest area first (the backdrop left out when one is found)."""
    from moesaic.experts.colors import subject_colors

    named, _ = subject_colors(image, k=k)
    return [c.name for c in named if c.share >= 0.15] or [named[0].name]


def product_type(tags: list[tuple[str, float]]) -> tuple[str, str]:
    """(category, item type) from tagger labels, best first; ("other", top label) when none is a product."""
    for label, score in tags:
        if score >= MIN_TAG_SCORE and label in IMAGENET_PRODUCTS:
            return IMAGENET_PRODUCTS[label]
    return "other", tags[0][0].lower() if tags else "object"


def attributes_from_experts(
    image: "Image.Image", *, ocr: bool = True, tags: list[tuple[str, float]] | None = None
) -> ProductAttributes:
    """Stage 1 without a VLM: tagger + colours (+ OCR). ``tags`` skips the tagger when already known."""
    if tags is None:
        from moesaic.experts.tagger import Tagger

        tags = [(t.label, float(t.score)) for t in Tagger.shared().tag(image, top_k=5)]
    category, item_type = product_type(tags)
    text = None
    if ocr:
        from moesaic.experts.ocr import OCR

        lines = [line.text.strip() for line in OCR.shared().read(image) if line.score >= 0.6 and line.text.strip()]
        text = " ".join(lines)[:120] or None
    return ProductAttributes(category=category, item_type=item_type, colours=product_colours(image),  # type: ignore[arg-type]
                             visible_text=text, source="experts")
