"""Registry: built-ins, third-party entry points, suggestions, broken plugins, option validation."""
from __future__ import annotations

import textwrap

import pytest

from methods import BUILTINS, MethodError, available_methods, get_method
from methods.base import Decoder, OptionError


def install_plugin(tmp_path, monkeypatch, name, attr, module_source, group="harness.methods"):
    """A real installed distribution (dist-info with entry_points.txt) on sys.path; its module is unique
    to the test so that no earlier import is reused."""
    module = f"plugin_{name}_{abs(hash(str(tmp_path)))}"
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(module_source))
    target = f"{module}:{attr}"
    info = tmp_path / "plugin_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-pkg\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {target}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


PLUGIN = """
    from methods.ar import AR
    class Echo(AR):
        description = "AR under another name, from a plugin"
    class NotADecoder:
        pass
"""


def test_builtins_load_and_describe_themselves():
    for name in BUILTINS:
        cls = get_method(name)
        assert issubclass(cls, Decoder) and cls.description
        assert available_methods()[name].origin == "builtin"


def test_entry_point_plugin_is_found(tmp_path, monkeypatch):
    install_plugin(tmp_path, monkeypatch, "echo", "Echo", PLUGIN)
    spec = available_methods()["echo"]
    assert spec.origin == "plugin-pkg" and spec.target.endswith(":Echo")
    assert get_method("echo").description.startswith("AR under another name")


def test_plugin_cannot_shadow_a_builtin(tmp_path, monkeypatch):
    install_plugin(tmp_path, monkeypatch, "jacobi", "Echo", PLUGIN)
    assert available_methods()["jacobi"].origin == "builtin"


def test_broken_plugin_is_a_clear_error(tmp_path, monkeypatch):
    install_plugin(tmp_path, monkeypatch, "broken", "Echo", "raise ImportError('missing dependency xyz')\n")
    with pytest.raises(MethodError, match="'broken'.*failed to load.*missing dependency xyz"):
        get_method("broken")


def test_plugin_that_is_not_a_decoder(tmp_path, monkeypatch):
    install_plugin(tmp_path, monkeypatch, "odd", "NotADecoder", PLUGIN)
    with pytest.raises(MethodError, match="not a subclass"):
        get_method("odd")


@pytest.mark.parametrize("typo,suggestion", [("jacobbi", "jacobi"), ("jacob", "jacobi"), ("AR", None)])
def test_typo_gets_a_suggestion(typo, suggestion):
    with pytest.raises(MethodError) as err:
        get_method(typo)
    msg = str(err.value)
    assert f"unknown method {typo!r}" in msg
    assert (f"did you mean {suggestion!r}" in msg) if suggestion else "did you mean" not in msg


def test_options_are_typed_and_validated():
    cls = get_method("jacobi")
    assert cls.parse_options({"block_size": "4"}).block_size == 4
    with pytest.raises(OptionError, match="unknown option 'blocksize'.*block_size"):
        cls.parse_options({"blocksize": "4"})
    with pytest.raises(OptionError, match="expected a number"):
        cls.parse_options({"block_size": "many"})
    with pytest.raises(OptionError, match="block_size must be >= 1"):
        cls.parse_options({"block_size": "0"})
    with pytest.raises(OptionError, match="init must be one of"):
        cls.parse_options({"init": "zeros"})
    with pytest.raises(OptionError, match="unknown option"):
        get_method("ar").parse_options({"block_size": "4"})


PLUGIN_AUTO = """
    from dataclasses import dataclass

    from methods.jacobi import Jacobi, JacobiOptions

    @dataclass(frozen=True)
    class SizedOptions:
        block_size: str = "2"  # a number, or "auto": the block whose forward is cheapest here
        init: str = "prompt"
        seed: int = 0

    class Sized(Jacobi):
        description = "Jacobi with a block chosen for the hardware, from a plugin"
        Options = SizedOptions

        def __init__(self, model, options=None, loader=None, engine=None):
            super().__init__(model, options, loader, engine)
            self.options = JacobiOptions(int(self.options.block_size), self.options.init, self.options.seed)

        @classmethod
        def tuning_space(cls):
            return ({"block_size": "1"}, {"block_size": "2"})

        @classmethod
        def resolve_auto(cls, options, ctx):
            if options.get("block_size") != "auto":
                return options, None
            cost = ctx.cost([2, 3])
            n = min((2, 3), key=lambda w: (cost[w], w)) - 1
            ctx.say(f"sized: block {n}")
            return {**options, "block_size": str(n)}, {"cost": {str(w): cost[w] for w in (2, 3)}}
"""


def test_a_plugin_method_brings_its_tuning_space_and_its_auto_option(tmp_path, monkeypatch, write_gsm8k):
    """A method from another package is tuned and resolves `auto` with no harness edit (issue #40)."""
    import json

    from click.testing import CliRunner

    from harness.cli import main
    from harness.orchestration.tune import TuneConfig, grid, tune

    install_plugin(tmp_path / "plugin", monkeypatch, "sized", "Sized", PLUGIN_AUTO)
    assert [o for m, o in grid() if m == "sized"] == [{"block_size": "1"}, {"block_size": "2"}]
    data = write_gsm8k(tmp_path / "data", [{"question": "Tom has 3 apples and buys 4 more. How many?",
                                             "answer": "#### 7"}])
    result = tune(TuneConfig(out=str(tmp_path / "t.json"), model="tiny-random", limit=1, max_new_tokens=8,
                             data_dir=str(data)), echo=lambda *a: None)
    assert {r["options"] for r in result["candidates"] if r["method"] == "sized"} == {"block_size=1", "block_size=2"}
    assert any(t.startswith("sized:block_size=") for t in result["tuned"])

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "Question: 1+1?"}\n')
    res = CliRunner().invoke(main, ["run", "--method", "sized", "-O", "block_size=auto", "--model", "tiny-random",
                                    "--prompts", str(prompts), "--max-new-tokens", "6",
                                    "--runs-dir", str(tmp_path / "runs")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "sized: block" in res.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    info = json.loads((run_dir / "run.json").read_text())
    chosen = info["auto"]["chosen"]["block_size"]
    assert chosen in ("1", "2") and info["config"]["options"]["block_size"] == chosen
    assert set(info["auto"]["cost"]) == {"2", "3"}
    # an option the method cannot choose is one clear line
    res = CliRunner().invoke(main, ["run", "--method", "jacobi", "-O", "init=auto", "--model", "tiny-random",
                                    "--prompts", str(prompts), "--runs-dir", str(tmp_path / "runs2")])
    assert res.exit_code == 2 and "init" in res.output and len(res.output.strip().splitlines()) == 1
