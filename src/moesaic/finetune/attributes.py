"""The attribute task: image → JSON attributes that always parse and match the schema.

Strategy ``constrained`` (default): decoding is restricted to the schema. Fields are filled in schema order;
for each field every allowed value is scored by the model's log-likelihood of the canonical JSON so far
(rendered exactly as in training, through the chat template) and the best value is kept. The output is
built from schema values only, so it always parses and validates; the cost is one batched forward pass
per field. Strategy ``generate``: free greedy decoding → validate → two sampled retries → repair (each field
takes the first allowed value named in the text, else the first allowed value); the raw invalid-JSON rate is
reported so the two strategies can be compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from moesaic.atomic import atomic_write_text
from moesaic.config import RESOLVED_CONFIG_NAME
from moesaic.errors import InputError
from moesaic.finetune.config import BudgetSettings, EvalAttributesConfig
from moesaic.finetune.data import load_samples
from moesaic.finetune.encode import process
from moesaic.finetune.evaluate import generate_answer
from moesaic.finetune.schema import AttributeSchema, canonical_json, infer_schema, load_schema, validate_attributes
from moesaic.progress import progress

__all__ = ["AttributeReport", "eval_attributes", "constrained_attributes", "generated_attributes",
           "load_trained", "SCHEMA_NAME"]

SCHEMA_NAME = "attribute_schema.json"


class AttributeReport(BaseModel):
    samples: int
    strategy: str
    per_field_accuracy: dict[str, float]
    exact_match: float
    invalid_json_rate: float = Field(description="raw outputs that were not JSON (before retry/repair)")
    schema_invalid_rate: float = Field(description="final outputs that do not match the schema")
    attribute_schema: dict[str, list[str]]

    def render(self) -> str:
        fields = "\n".join(f"  {k:<16} {v:.3f}" for k, v in self.per_field_accuracy.items())
        return (f"{self.samples} samples, strategy {self.strategy}\nper-field accuracy:\n{fields}\n"
                f"exact match {self.exact_match:.3f}; invalid JSON {self.invalid_json_rate:.3f}; "
                f"schema-invalid {self.schema_invalid_rate:.3f}")


def load_trained(path: str | Path) -> tuple[Any, Any, Path]:
    """(model, processor, folder) from a finetune output, a PEFT adapter, or a full model folder."""
    from moesaic.finetune.model import load_model, load_processor

    p = Path(path)
    for sub in ("model", "adapter"):
        if (p / sub).is_dir():
            p = p / sub
            break
    if (p / "adapter_config.json").is_file():
        from peft import PeftModel

        base = json.loads((p / "adapter_config.json").read_text())["base_model_name_or_path"]
        model = PeftModel.from_pretrained(load_model(base), p)
        return model, load_processor(p if (p / "tokenizer_config.json").is_file() else base), p
    return load_model(p), load_processor(p), p


def _scored_texts(processor: Any, messages: list[dict[str, Any]], partials: list[str]) -> list[str]:
    """The conversation rendered with each partial answer, cut right after the partial."""
    out = []
    for partial in partials:
        full = processor.apply_chat_template(
            [*messages, {"role": "assistant", "content": [{"type": "text", "text": partial}]}], tokenize=False)
        out.append(full[: full.rfind(partial) + len(partial)])
    return out


def _score(model: Any, processor: Any, texts: list[str], images: list[Any], prompt_len: int) -> list[float]:
    """Sum of log-probabilities of each text's tokens after the prompt."""
    import torch

    tok = processor.tokenizer
    side, tok.padding_side = tok.padding_side, "right"
    try:
        inputs = process(processor, texts, [images] * len(texts))
    finally:
        tok.padding_side = side
    with torch.no_grad():
        logp = torch.log_softmax(model(**inputs).logits.float(), dim=-1)  # (n, seq, vocab)
    ids, lengths = inputs["input_ids"], inputs["attention_mask"].sum(dim=1)
    scores = []
    for row in range(len(texts)):
        end = int(lengths[row])
        target = ids[row, prompt_len:end]  # (answer_tokens,)
        scores.append(float(logp[row, prompt_len - 1:end - 1].gather(-1, target[:, None]).sum()))
    return scores


def constrained_attributes(model: Any, processor: Any, messages: list[dict[str, Any]], images: list[Any],
                           schema: AttributeSchema) -> dict[str, str]:
    """Fill fields in schema order, each with the allowed value the model finds most likely."""
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_len = int(process(processor, [prompt], [images])["input_ids"].shape[1])
    chosen: dict[str, str] = {}
    keys = list(schema)
    for i, key in enumerate(keys):
        partials = []
        for value in schema[key]:
            text = canonical_json({**chosen, key: value}, keys)
            partials.append(text if i == len(keys) - 1 else text[:-1])  # keep "}" only when complete
        scores = _score(model, processor, _scored_texts(processor, messages, partials), images, prompt_len)
        chosen[key] = schema[key][max(range(len(scores)), key=scores.__getitem__)]
    return chosen


def _repair(text: str, schema: AttributeSchema) -> dict[str, str]:
    low = text.casefold()
    out = {}
    for key, values in schema.items():
        hits = sorted((low.find(v.casefold()), v) for v in values if v.casefold() in low)
        out[key] = hits[0][1] if hits else values[0]
    return out


def generated_attributes(model: Any, processor: Any, messages: list[dict[str, Any]], images: list[Any],
                         schema: AttributeSchema, max_new_tokens: int) -> tuple[dict[str, str], bool]:
    """Free decoding → validate → retry (sampled) → repair. Returns (attributes, raw_output_was_json)."""
    import torch

    raw = generate_answer(model, processor, messages, images, max_new_tokens)
    problem = validate_attributes(raw, schema)[1]
    was_json = problem is None or not problem.startswith(("invalid JSON", "not a JSON"))
    text = raw
    for attempt in range(3):
        parsed, problem = validate_attributes(text, schema)
        if problem is None and parsed is not None:
            return parsed, was_json
        if attempt < 2:
            torch.manual_seed(attempt)
            text = _sampled(model, processor, messages, images, max_new_tokens)
    return _repair(raw, schema), was_json


def _sampled(model: Any, processor: Any, messages: list[dict[str, Any]], images: list[Any], n: int) -> str:
    import torch

    from moesaic.finetune.evaluate import prompt_inputs

    inputs = prompt_inputs(processor, messages, images)
    tok = processor.tokenizer
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=n, do_sample=True, temperature=0.7,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return str(tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)).strip()


def _schema(config: EvalAttributesConfig, folder: Path, gold: list[dict[str, str]]) -> AttributeSchema:
    if config.schema_path:
        return load_schema(config.schema_path)
    for cand in (folder / SCHEMA_NAME, folder.parent / SCHEMA_NAME):
        if cand.is_file():
            return load_schema(cand)
    return infer_schema(gold)


def _run_budget(folder: Path) -> BudgetSettings:
    """The vision-token budget the model was trained with (its saved config), else none."""
    import yaml

    for cand in (folder / RESOLVED_CONFIG_NAME, folder.parent / RESOLVED_CONFIG_NAME):
        if cand.is_file():
            data = yaml.safe_load(cand.read_text(encoding="utf-8")) or {}
            if isinstance(data, dict) and isinstance(data.get("budget"), dict):
                return BudgetSettings.model_validate({**data["budget"], "too_long": "drop"})
    return BudgetSettings()


def eval_attributes(config: EvalAttributesConfig) -> AttributeReport:
    """Per-field accuracy, exact-match rate and invalid-JSON rate of attribute predictions."""
    samples = load_samples(config.data, config.image_root)
    bad = [s.row for s in samples if s.attributes is None]
    if bad:
        raise InputError(f"rows {bad[:20]} of {config.data} have no 'attributes'",
                         "every evaluation row needs an 'attributes' object with the expected values")
    gold = [s.attributes or {} for s in samples]
    model, processor, folder = load_trained(config.model)
    model.eval()
    schema = _schema(config, folder, gold)
    from moesaic.finetune.budget import prepare
    from moesaic.finetune.model import image_token_id

    prepare(processor, samples, _run_budget(folder), image_token_id(processor))  # images as the run saw them
    preds, raw_ok = [], []
    for s in progress(samples, desc="attributes", unit="sample"):
        images = s.pil
        if config.strategy == "constrained":
            preds.append(constrained_attributes(model, processor, s.prompt_messages(), images, schema))
            raw_ok.append(True)
        else:
            pred, ok = generated_attributes(model, processor, s.prompt_messages(), images, schema,
                                            config.max_new_tokens)
            preds.append(pred)
            raw_ok.append(ok)
    report = _report(preds, gold, raw_ok, schema, config.strategy)
    if config.output:
        out = Path(config.output)
        atomic_write_text(out / "report.json", report.model_dump_json(indent=2))
        atomic_write_text(out / "predictions.jsonl", "".join(
            json.dumps({"row": s.row, "predicted": p, "expected": g}) + "\n" for s, p, g in zip(samples, preds, gold)))
        config.save(out)
    return report


def _report(preds: list[dict[str, str]], gold: list[dict[str, str]], raw_ok: list[bool],
            schema: AttributeSchema, strategy: str) -> AttributeReport:
    n = len(gold)
    fields = {k: sum(p.get(k) == g.get(k) for p, g in zip(preds, gold)) / n for k in schema}
    invalid = sum(validate_attributes(json.dumps(p), schema)[1] is not None for p in preds)
    return AttributeReport(samples=n, strategy=strategy, per_field_accuracy=fields,
                           exact_match=sum(all(p.get(k) == g.get(k) for k in g) for p, g in zip(preds, gold)) / n,
                           invalid_json_rate=1 - sum(raw_ok) / n, schema_invalid_rate=invalid / n,
                           attribute_schema=schema)
