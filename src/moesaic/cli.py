"""The ``moesaic`` command: maps verbs to typed command functions; nothing else.

Each command is ``def verb(config: SomeConfig) -> Result``. Flags are generated from the config's fields
(``--field-name VALUE``; values are read as YAML scalars so ``2``, ``0.5``, ``true`` and ``[a, b]`` work),
``--config FILE.yaml`` supplies a file, dotted flags (``--gate.lr 0.1``) reach nested keys, and the
config's ``positional`` fields are positional arguments. Errors meant for users print as one line.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
import typing
from collections.abc import Sequence
from typing import Any

__all__ = ["COMMANDS", "main"]

# verb -> ("module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "ask": ("moesaic.ask:ask", "answer a question about an image (local model or --endpoint)"),
    "demo": ("moesaic.demo:demo", "the main job behind `make run`"),
    "serve": ("moesaic.serve.app:serve", "serve a model over an OpenAI- and SageMaker-compatible API"),
    "merge": ("moesaic.moe.merge:merge", "merge fine-tuned VLMs into a sparse MoE VLM"),
    "train-gates": ("moesaic.moe.gate_train:train_gates", "train the gates of a merged MoE"),
    "route-report": ("moesaic.moe.report:route_report", "which experts each domain's tokens go to"),
    "finetune": ("moesaic.finetune.train:finetune", "LoRA or full fine-tuning of a VLM"),
    "export-adapter": ("moesaic.finetune.export:export_adapter", "merge a LoRA adapter into full weights"),
    "eval": ("moesaic.eval.run:evaluate", "compare models on accuracy, latency, memory and cost"),
    "eval-attributes": ("moesaic.finetune.attributes:eval_attributes", "per-field accuracy of attribute JSON"),
    "caption": ("moesaic.tasks.caption:caption", "describe an image (--detail brief|detailed)"),
    "tag": ("moesaic.tasks.tag:tag", "tags with scores for an image (--top-k, --threshold)"),
    "vqa": ("moesaic.tasks.vqa:vqa", "answer a question about an image"),
    "describe-product": ("moesaic.tasks.product.command:describe_product", "product attributes (JSON) and a grounded description"),
    "index": ("moesaic.tasks.search.commands:index", "index images (folder, CSV, JSONL) and videos for search"),
    "search": ("moesaic.tasks.search.query:search", "find indexed images and video moments by text or --image"),
    "find": ("moesaic.tasks.search.video_find:find", "find when something appears in a video: time ranges"),
    "fewshot": ("moesaic.tasks.fewshot:fewshot", "answer with worked examples (images + answers) in the prompt"),
    "video": ("moesaic.tasks.video:video", "answer a question about a video, clip by clip, with timestamps"),
    "batch": ("moesaic.tasks.batch:batch", "run a task over a folder, CSV or JSONL of images (resumable)"),
}


def _resolve(verb: str) -> Any:
    target, _ = COMMANDS[verb]
    module, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("moesaic"):
            raise SystemExit(f"error: the '{verb}' command is not available in this build ({exc.name} missing)")
        raise
    return getattr(mod, attr)


def _config_class(func: Any) -> Any:
    hints = typing.get_type_hints(func)
    params = list(inspect.signature(func).parameters)
    return hints[params[0]]


def _yaml_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _build_parser(verb: str, config_cls: Any, doc: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"moesaic {verb}", description=doc, allow_abbrev=False)
    parser.add_argument("--config", metavar="FILE.yaml", help="read the config from a YAML file; flags override it")
    parser.add_argument("--json", dest="_json", action="store_true", help="print the result as JSON")
    for name in config_cls.positional:
        # Optional on the command line: a --config file may supply it; the config validation names it if missing.
        field = config_cls.model_fields[name]
        parser.add_argument(name, nargs="?", default=None, help=field.description or name)
    for name, field in config_cls.model_fields.items():
        if name in config_cls.positional:
            continue
        flag = "--" + name.replace("_", "-")
        default = "" if field.is_required() else f" (default: {field.get_default(call_default_factory=True)!r})"
        if field.annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                                help=(field.description or "") + default)
        else:
            short = [f"-{name}"] if len(name) == 1 else []  # one-letter fields also get -x (search -k 10)
            parser.add_argument(flag, *short, dest=name, metavar=name.upper(), default=None,
                                help=(field.description or "") + default)
    return parser


def _split_dotted(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Pull ``--a.b value`` / ``--a.b=value`` out of argv (nested overrides)."""
    rest: list[str] = []
    dotted: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and "." in arg.split("=", 1)[0]:
            key, eq, val = arg[2:].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise SystemExit(f"error: {arg} needs a value")
                val = argv[i + 1]
                i += 1
            dotted[key.replace("-", "_")] = _yaml_value(val)
        else:
            rest.append(arg)
        i += 1
    return rest, dotted


def run_command(verb: str, argv: Sequence[str]) -> int:
    from moesaic.errors import MoesaicError

    func = _resolve(verb)
    config_cls = _config_class(func)
    rest, dotted = _split_dotted(list(argv))
    if not config_cls.positional and rest and rest[0].endswith((".yaml", ".yml")):
        rest = ["--config", *rest]  # `moesaic VERB CONFIG.yaml` for commands without positional fields
    parser = _build_parser(verb, config_cls, (func.__doc__ or "").strip().split("\n")[0])
    ns = vars(parser.parse_args(rest))
    as_json = ns.pop("_json")
    config_path = ns.pop("config")
    overrides: dict[str, Any] = {}
    for key, value in ns.items():
        if value is None:
            continue
        is_str_field = config_cls.model_fields[key].annotation in (str, str | None)
        overrides[key] = value if (key in config_cls.positional or is_str_field or isinstance(value, bool)) \
            else _yaml_value(value)
    overrides.update(dotted)
    streamed = _Printer()
    try:
        config = config_cls.load(config_path, overrides)
        if getattr(config, "stream", False) and not as_json and "on_delta" in inspect.signature(func).parameters:
            result = func(config, on_delta=streamed)
        else:
            result = func(config)
    except MoesaicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    if streamed.wrote:
        print()  # the answer is already on screen, piece by piece
    else:
        _print_result(result, as_json)
    return 0


class _Printer:
    """``on_delta`` for streaming commands: writes each piece to stdout as it arrives."""

    def __init__(self) -> None:
        self.wrote = False

    def __call__(self, text: str) -> None:
        self.wrote = True
        sys.stdout.write(text)
        sys.stdout.flush()


def _print_result(result: Any, as_json: bool) -> None:
    if result is None:
        return
    if as_json:
        if hasattr(result, "model_dump_json"):
            print(result.model_dump_json(indent=2))
        else:
            print(json.dumps(result, indent=2, default=str))
        return
    render = getattr(result, "render", None)
    print(render() if callable(render) else result)


def _configure_logging() -> None:
    """Warnings and errors from the library reach stderr as plain lines; INFO with MOESAIC_LOG=info."""
    import logging
    import os

    level = os.environ.get("MOESAIC_LOG", "warning").upper()
    logging.basicConfig(level=getattr(logging, level, logging.WARNING), format="%(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _configure_logging()
    if not argv or argv[0] in ("-h", "--help"):
        width = max(len(v) for v in COMMANDS)
        lines = [f"  {v.ljust(width)}  {h}" for v, (_, h) in COMMANDS.items()]
        print("usage: moesaic VERB [options]   (moesaic VERB --help for its options)\n\nverbs:\n" + "\n".join(lines))
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb not in COMMANDS:
        print(f"error: unknown command {verb!r} — run 'moesaic --help' for the list", file=sys.stderr)
        return 2
    return run_command(verb, rest)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
