"""Task pipelines on top of any backend: caption, tag, vqa, product descriptions, search, few-shot,
video, speech and batch runs. Each task module has a frozen config, a command function and a result with
``render()``; the per-image tasks share :class:`moesaic.tasks.base.Task` and run under ``moesaic batch``.

Nothing heavy is imported here; import the submodule you need.
"""

__all__ = ["base", "caption", "tag", "vqa", "product", "search", "fewshot", "video", "speech", "batch", "registry"]
