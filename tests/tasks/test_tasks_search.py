"""index + search: recall on generated product photos, incremental indexing, filters, CLIP, errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from moesaic.errors import ConfigError, InputError, NotFoundError
from moesaic.tasks.samples import draw_product, save_products
from moesaic.tasks.search import IndexConfig, SearchConfig, VectorStore, index, search

COLOURS = ("red", "blue", "green", "yellow")
KINDS = ("t-shirt", "shoe", "bag")


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("catalogue")
    save_products(root / "images", [(k, c) for c in COLOURS for k in KINDS])
    db = root / "index.db"
    result = index(IndexConfig(source=str(root / "images"), db=str(db), ocr=False))
    assert (result.added, result.total, result.dim, result.embedder) == (12, 12, 384, "starter")
    return root / "images", db


def _stems(db: Path, query: str, k: int = 3, where: list[str] | None = None) -> list[str]:
    hits = search(SearchConfig(query=query, db=str(db), k=k, where=where or [])).hits
    return [Path(h.ref).stem for h in hits]


def test_colour_and_type_queries_find_the_right_product(catalogue: tuple[Path, Path]) -> None:
    _, db = catalogue
    for colour in COLOURS:
        assert _stems(db, f"{colour} t-shirt", k=1) == [f"{colour}-t-shirt"]


def test_colour_recall_at_3(catalogue: tuple[Path, Path]) -> None:
    _, db = catalogue
    precision = []
    for colour in COLOURS:
        stems = _stems(db, colour, k=3)
        assert stems[0].startswith(colour)  # the best hit has the asked colour
        precision.append(sum(s.startswith(colour) for s in stems) / 3)
    assert sum(precision) / len(precision) >= 0.75  # measured 0.92 (11 of 12)


def test_where_filters_are_exact(catalogue: tuple[Path, Path]) -> None:
    _, db = catalogue
    stems = _stems(db, "bag", k=10, where=["color=green"])  # alias of colour
    assert sorted(stems) == ["green-bag", "green-shoe", "green-t-shirt"]
    assert _stems(db, "anything", k=5, where=["colour=red", "type=t-shirt"]) == ["red-t-shirt"]
    assert _stems(db, "anything", where=["colour=purple"]) == []
    hit = search(SearchConfig(query="red", db=str(db), k=1)).hits[0]
    assert hit.attrs["colour"] == ["red"] and hit.attrs["category"] == ["top"] and 0 < hit.score <= 1


def test_search_by_image_finds_itself_first(catalogue: tuple[Path, Path]) -> None:
    images, db = catalogue
    hits = search(SearchConfig(image=str(images / "blue-bag.png"), db=str(db), k=2)).hits
    assert Path(hits[0].ref).name == "blue-bag.png" and hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_incremental_indexing_skips_unchanged_files(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    paths = save_products(folder, [("t-shirt", "red"), ("t-shirt", "blue")])
    db = tmp_path / "i.db"
    cfg = IndexConfig(source=str(folder), db=str(db), ocr=False)
    assert index(cfg).added == 2
    again = index(cfg)
    assert (again.added, again.updated, again.skipped) == (0, 0, 2)
    st = paths[0].stat()
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touched, same bytes
    touched = index(cfg)
    assert (touched.updated, touched.skipped) == (0, 2)
    draw_product("t-shirt", "green").save(paths[0])  # same name, new content
    save_products(folder, [("t-shirt", "yellow")])
    changed = index(cfg)
    assert (changed.added, changed.updated, changed.skipped, changed.total) == (1, 1, 1, 3)
    assert _stems(db, "green t-shirt", k=1) == ["red-t-shirt"]  # the file named red now shows green
    paths[1].unlink()
    (folder / "broken.png").write_text("not an image")
    pruned = index(cfg.model_copy(update={"prune": True}))
    assert (pruned.removed, pruned.total, pruned.added) == (1, 2, 0)
    assert len(pruned.failed) == 1 and "broken.png" in pruned.failed[0] and "failed:" in pruned.render()
    assert (tmp_path / "i.db.config.yaml").is_file()


def test_csv_source_with_metadata_columns(tmp_path: Path) -> None:
    save_products(tmp_path / "p", [("t-shirt", "red"), ("t-shirt", "blue")])
    csv_path = tmp_path / "items.csv"
    csv_path.write_text("path,brand\np/red-t-shirt.png,Acme\np/blue-t-shirt.png,Zed\n")
    db = tmp_path / "c.db"
    assert index(IndexConfig(source=str(csv_path), db=str(db), ocr=False)).added == 2
    hits = search(SearchConfig(query="t-shirt", db=str(db), where="brand=zed")).hits
    assert [Path(h.ref).name for h in hits] == ["blue-t-shirt.png"] and hits[0].extra == {"brand": "Zed"}


def test_clear_errors(tmp_path: Path, catalogue: tuple[Path, Path]) -> None:
    with pytest.raises(NotFoundError, match="no index"):
        search(SearchConfig(query="red", db=str(tmp_path / "none.db")))
    VectorStore(tmp_path / "empty.db", create=True).db.close()
    with pytest.raises(NotFoundError, match="empty"):
        search(SearchConfig(query="red", db=str(tmp_path / "empty.db")))
    with pytest.raises(InputError, match="key=value"):
        search(SearchConfig(query="red", db=str(catalogue[1]), where=["red"]))
    with pytest.raises(ConfigError, match="text query or --image"):
        SearchConfig.validated({"db": "x.db"})
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(InputError, match="names no images"):
        index(IndexConfig(source=str(empty), db=str(tmp_path / "n.db")))
    with pytest.raises(ConfigError, match="unknown embedder"):
        index(IndexConfig(source=str(catalogue[0]), db=str(tmp_path / "e.db"), embedder="word2vec"))


def _tiny_dual_encoder(kind: str, path: Path) -> Path:
    """A random 1-layer CLIP or SigLIP with a tiny offline tokenizer, saved with its processor."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipProcessor,
    )

    from moesaic.testing.tokenizers import bpe_tokenizer

    tok = bpe_tokenizer(["<pad>", "<s>", "</s>"], bos="<s>", eos="</s>", pad="<pad>")
    tok.model_max_length = 16
    text = {"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 64, "pad_token_id": tok.pad_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
    torch.manual_seed(0)
    if kind == "clip":
        text.update(eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
        images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        processor = CLIPProcessor(image_processor=images, tokenizer=tok)
    else:
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
        processor = SiglipProcessor(image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok)
    model.eval().save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.mark.parametrize(("kind", "dim"), [("clip", 16), ("siglip", 32)])
def test_dual_encoder_embedders_from_a_local_folder(
    tmp_path: Path, catalogue: tuple[Path, Path], kind: str, dim: int
) -> None:
    images, _ = catalogue
    model = _tiny_dual_encoder(kind, tmp_path / kind)
    db = tmp_path / f"{kind}.db"
    built = index(IndexConfig(source=str(images), db=str(db), embedder=f"{kind}:{model}"))
    assert (built.dim, built.total, built.embedder) == (dim, 12, f"{kind}:{model}")
    with VectorStore(db) as store:
        assert store.meta() == {"embedder": f"{kind}:{model}", "dim": str(dim)}
    for name in ("red-t-shirt.png", "green-bag.png", "yellow-shoe.png"):
        hits = search(SearchConfig(image=str(images / name), db=str(db), k=3)).hits
        assert Path(hits[0].ref).name == name and hits[0].score == pytest.approx(1.0, abs=1e-4)
    text_hits = search(SearchConfig(query="a red cat", db=str(db), k=4)).hits
    assert len(text_hits) == 4 and all(-1.0 <= h.score <= 1.0 for h in text_hits)
    assert search(SearchConfig(query="x", db=str(db), k=12, where=["colour=red"])).hits[0].attrs["colour"] == ["red"]
    with pytest.raises(ConfigError, match="built with embedder"):
        index(IndexConfig(source=str(images), db=str(db), embedder="starter"))
    shutil.rmtree(model)


def test_an_interrupted_index_keeps_what_it_committed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from moesaic.tasks.search import commands
    from moesaic.tasks.search.embedders import CaptionEmbedder

    monkeypatch.setattr(commands, "COMMIT_EVERY", 3)
    save_products(tmp_path / "imgs", [("t-shirt", c) for c in ("red", "blue", "green", "yellow", "black")], size=64)
    real = CaptionEmbedder.describe
    calls = {"n": 0}

    def interrupted(self: CaptionEmbedder, image: object, extra: object = None) -> object:
        calls["n"] += 1
        if calls["n"] == commands.COMMIT_EVERY + 2:
            raise KeyboardInterrupt
        return real(self, image, extra)  # type: ignore[arg-type]

    monkeypatch.setattr(CaptionEmbedder, "describe", interrupted)
    cfg = IndexConfig(source=str(tmp_path / "imgs"), db=str(tmp_path / "i.db"), ocr=False)
    with pytest.raises(KeyboardInterrupt):
        index(cfg)
    with VectorStore(tmp_path / "i.db") as store:
        assert store.count() == commands.COMMIT_EVERY  # the committed batch survived, the open one rolled back
    monkeypatch.setattr(CaptionEmbedder, "describe", real)
    resumed = index(cfg)
    assert (resumed.added, resumed.skipped, resumed.total) == (2, 3, 5)
