"""Config loading, CLI generation, errors and atomic writes: the ground floor every command uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
import yaml
from pydantic import BaseModel

from moesaic import cli
from moesaic.atomic import atomic_dir, atomic_write_text
from moesaic.backends.base import Answer, Backend, GenerationParams, apply_stop
from moesaic.backends.registry import model_type_of, resolve_backend
from moesaic.config import CommandConfig, FrozenModel, apply_overrides
from moesaic.errors import ConfigError, MoesaicError, URLPolicyError


class Inner(FrozenModel):
    lr: float = 0.1
    steps: int = 10


class DemoCfg(CommandConfig):
    positional = ("source",)
    source: str
    k: int = 2
    mode: Literal["a", "b"] = "a"
    verbose: bool = False
    names: list[str] = []
    inner: Inner = Inner()


class DemoResult(BaseModel):
    text: str

    def render(self) -> str:
        return f"rendered:{self.text}"


def demo_cmd(config: DemoCfg) -> DemoResult:
    """Demo command used by the CLI tests."""
    if config.source == "boom":
        raise ConfigError("source 'boom' is not allowed", "pass another source")
    return DemoResult(text=f"{config.source}|{config.k}|{config.mode}|{config.verbose}|{config.names}|{config.inner.lr}")


sys.modules[__name__].demo_cmd = demo_cmd  # importable by the CLI through this module's name


@pytest.fixture()
def demo_verb(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(cli.COMMANDS, "demo-test", (f"{__name__}:demo_cmd", "test"))
    return "demo-test"


def test_overrides_nest_dotted_keys() -> None:
    out = apply_overrides({"a": {"b": 1, "c": 2}, "x": 1}, {"a.b": 5, "new.key": "v", "x": 2})
    assert out == {"a": {"b": 5, "c": 2}, "x": 2, "new": {"key": "v"}}


def test_config_yaml_plus_overrides_and_save(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"source": "s", "k": 3, "inner": {"lr": 0.5}}))
    cfg = DemoCfg.load(path, {"inner.steps": 7, "mode": "b"})
    assert (cfg.k, cfg.mode, cfg.inner.lr, cfg.inner.steps) == (3, "b", 0.5, 7)
    saved = cfg.save(tmp_path / "art")
    assert yaml.safe_load(saved.read_text())["inner"] == {"lr": 0.5, "steps": 7}
    with pytest.raises(Exception):
        cfg.k = 4  # type: ignore[misc]  # frozen


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        DemoCfg.load(None, {"source": "s", "k": "many", "typo_key": 1})
    text = str(err.value)
    assert "k:" in text and "typo_key: unknown key" in text and "fix" in text
    with pytest.raises(ConfigError, match="does not exist"):
        DemoCfg.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        DemoCfg.load(bad)


def test_cli_generates_flags_from_config(demo_verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main([demo_verb, "src", "--k", "4", "--mode", "b", "--verbose", "--names", "[x, y]", "--inner.lr", "0.25"])
    assert code == 0
    assert capsys.readouterr().out.strip() == "rendered:src|4|b|True|['x', 'y']|0.25"


def test_cli_json_and_config_file(demo_verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("source: fromfile\nk: 9\n")
    assert cli.main([demo_verb, "--config", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"text": "fromfile|9|a|False|[]|0.1"}


def test_cli_user_errors_are_one_line(demo_verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([demo_verb, "boom"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: source 'boom' is not allowed — pass another source"
    assert cli.main([demo_verb, "s", "--k", "x"]) == 2
    assert capsys.readouterr().err.startswith("error: invalid config")
    assert cli.main(["no-such-verb"]) == 2


def test_cli_entry_point_runs_as_a_process() -> None:
    proc = subprocess.run([sys.executable, "-m", "moesaic.cli", "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    for verb in ("ask", "serve", "merge", "finetune"):
        assert verb in proc.stdout


def test_error_bodies_are_openai_shaped() -> None:
    err = URLPolicyError("address 127.0.0.1 is loopback", "use a public URL", param="messages")
    body = err.to_dict()["error"]
    assert body == {
        "message": "address 127.0.0.1 is loopback — use a public URL",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "url_not_allowed",
    }
    assert isinstance(err, MoesaicError) and err.status == 400


def test_atomic_dir_publishes_whole_or_nothing(tmp_path: Path) -> None:
    final = tmp_path / "model"
    with atomic_dir(final) as tmp:
        (tmp / "weights.bin").write_bytes(b"v1")
    assert (final / "weights.bin").read_bytes() == b"v1"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "weights.bin").write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert (final / "weights.bin").read_bytes() == b"v1"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no partial folders left
    with atomic_dir(final) as tmp:
        (tmp / "weights.bin").write_bytes(b"v2")
    assert (final / "weights.bin").read_bytes() == b"v2"
    atomic_write_text(tmp_path / "a" / "f.txt", "hello")
    assert (tmp_path / "a" / "f.txt").read_text() == "hello"
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.endswith(".tmp")]


def test_atomic_writes_get_the_usual_permissions(tmp_path: Path) -> None:
    import os
    import stat

    from moesaic.atomic import atomic_dir, atomic_write_text

    old = os.umask(0o022)
    os.umask(old)
    f = atomic_write_text(tmp_path / "a.json", "{}")
    with atomic_dir(tmp_path / "model") as d:
        (d / "w.bin").write_bytes(b"x")
    assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~old  # not mkstemp's 0600
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o777 & ~old  # not mkdtemp's 0700


def test_atomic_dir_recovers_what_a_killed_writer_left(tmp_path: Path) -> None:
    import subprocess
    import sys

    from moesaic.atomic import atomic_dir, recover

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()  # a pid that has exited
    final = tmp_path / "model"
    # killed between the two renames of an overwrite: no final, the previous one set aside, a temp folder left
    (tmp_path / f".model.old-{dead}").mkdir()
    (tmp_path / f".model.old-{dead}" / "w.bin").write_bytes(b"previous")
    (tmp_path / f".model.pid{dead}.x1y2.partial").mkdir()
    (tmp_path / ".model.v2.pid1.zz.partial").mkdir()  # another artefact's name: not ours to touch
    assert recover(final)
    assert (final / "w.bin").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.v2.pid1.zz.partial", "model"]
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:  # a failed rewrite keeps the restored one
        (tmp / "w.bin").write_bytes(b"half")
        raise RuntimeError("killed")
    assert (final / "w.bin").read_bytes() == b"previous"


def test_stop_strings_cut_at_the_first_match() -> None:
    assert apply_stop("hello world. bye", (".", "bye")) == ("hello world", True)
    assert apply_stop("hello", ("x",)) == ("hello", False)
    assert apply_stop("hello", ("",)) == ("hello", False)


def test_backend_default_batch_and_stream() -> None:
    class Echo(Backend):
        name = "echo"

        def generate(self, prompt, params=None):  # type: ignore[no-untyped-def]
            return Answer(text=prompt[-1].text.upper(), model=self.name)

    from moesaic.inputs.messages import Turn

    echo = Echo()
    answers = echo.generate_batch([[Turn("user", ("a",))], [Turn("user", ("b",))]])
    assert [a.text for a in answers] == ["A", "B"]
    chunks = list(echo.stream([Turn("user", ("hi",))]))
    assert chunks[0].text == "HI" and chunks[-1].answer is not None and chunks[-1].answer.text == "HI"
    assert GenerationParams().greedy and not GenerationParams(temperature=0.7).greedy


def test_registry_routes_by_model_type(tmp_path: Path) -> None:
    assert resolve_backend("starter").name == "starter"
    (tmp_path / "vilt").mkdir()
    (tmp_path / "vilt" / "config.json").write_text(json.dumps({"model_type": "vilt"}))
    assert resolve_backend(str(tmp_path / "vilt")).name == "vilt"
    (tmp_path / "moe").mkdir()
    (tmp_path / "moe" / "config.json").write_text(json.dumps({"model_type": "llama", "moesaic": {"kind": "moesaic_generic_moe"}}))
    assert model_type_of(str(tmp_path / "moe")) == "moesaic_generic_moe"
    assert resolve_backend(str(tmp_path / "moe")).name == "moesaic-moe"
    assert resolve_backend("some-org/some-vlm").name == "hf"
    with pytest.raises(ConfigError, match="choose one of"):
        resolve_backend("x", backend="nope")


def test_import_moesaic_is_light() -> None:
    code = "import sys, moesaic, moesaic.cli, moesaic.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ})
    assert out.stdout.strip() == "False"
