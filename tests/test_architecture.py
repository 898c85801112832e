"""Imports go one way: a module imports only modules on lower floors (docs/architecture.md draws
the same floors). Every import counts, at the top of a file or inside a function, except those
under ``if TYPE_CHECKING:`` (type hints only); importing ``a.b.c`` also runs ``a.b``'s
``__init__``, so that counts too. A new module must be given a floor here and in the doc."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "captum_entropy"

FLOORS: list[set[str]] = [
    # leaves: shared names, file writers, the bootstrap, warnings, closed forms, words, the run
    # folder's format, torchrun ranks, an argument named in an error message
    {"_names", "_io", "_bootstrap", "_deprecated", "errors", "entropy", "words", "run_folder", "ranks",
     "_describe"},
    {"hooks", "readings"},
    {"checks", "objective", "fixed_draws", "viz._common"},
    {"fixed_draw_answer"},
    {"other_optima"},
    {"optim_settings"},
    {"update_rules"},
    {"optim", "stats", "viz.figures", "viz.page", "viz.text"},
    {"settings", "result", "viz"},  # viz renders result objects it knows only as type hints
    {"model_runner", "padding", "sigma_cap", "seeds"},  # the model side, beside the feature
    {"feature"},
    {"attr"},
    {"llm", "analysis"},
    {"layerwise"},  # the orchestration of every layer at once, beside explainer
    # the zoo sits beside the core: nothing below `explainer` imports it
    {"zoo.text", "zoo.models", "zoo.data", "zoo.training"},
    {"zoo.registry"},
    {"zoo.reversal"},
    {"zoo"},
    {"explainer", "run_results"},
    {"comparison", "runs", "evaluate.statistics", "evaluate.faithfulness"},
    {"evaluate.methods", "evaluate.ground_truth"},
    {"evaluate.known", "evaluate.coherency", "evaluate.harness", "evaluate.reversal_experiment"},
    {"evaluate", "demo"},
    {"cli"},
]
FLOOR = {name: i for i, floor in enumerate(FLOORS) for name in floor}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name:  # the package's own __init__ is the lazy facade: it imports nothing at load time
            out[name] = path
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported module, line) for every package import of ``name`` outside TYPE_CHECKING."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif (node.module or "").startswith("captum_entropy"):
                base = node.module.split(".")[1:]
            else:
                continue
            targets = [".".join(base + [a.name]) if ".".join(base + [a.name]) in modules else ".".join(base)
                       for a in node.names]
        else:
            targets = [a.name.split(".", 1)[1] for a in node.names if a.name.startswith("captum_entropy.")]
        for target in targets:
            parts = target.split(".")
            for k in range(1, len(parts) + 1):  # a.b.c runs a's and a.b's __init__ first
                module = ".".join(parts[:k])
                if module in modules and module != name and not name.startswith(module + "."):
                    found.append((module, node.lineno))
    return found


MODULES = _modules()


def test_every_module_has_a_floor():
    missing = sorted(set(MODULES) - set(FLOOR))
    assert not missing, f"give {missing} a floor in tests/test_architecture.py and docs/architecture.md"
    assert not set(FLOOR) - set(MODULES), f"floors name modules that no longer exist: {sorted(set(FLOOR) - set(MODULES))}"


def test_docs_architecture_lists_every_module():
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = [name for name in MODULES if f" {name.rsplit('.', 1)[-1]} " not in doc.replace("/", " ")]
    assert not missing, f"docs/architecture.md does not list {missing}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down(name):
    if name not in FLOOR:
        pytest.skip("no floor yet (test_every_module_has_a_floor fails)")
    up = [f"{name} (floor {FLOOR[name]}) imports {t} (floor {FLOOR.get(t)}) on line {line}"
          for t, line in _imports(name, MODULES[name], MODULES) if FLOOR.get(t, 10**6) >= FLOOR[name]]
    assert not up, "imports must point down:\n" + "\n".join(up)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The checker is not vacuous: an import inside a function counts, one under TYPE_CHECKING does not."""
    (tmp_path / "pkg").mkdir()
    fake = {"entropy": tmp_path / "pkg" / "entropy.py", "attr": tmp_path / "pkg" / "attr.py"}
    fake["entropy"].write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .attr import A\n"
                               "def f():\n    from .attr import EntropyAttribution\n")
    fake["attr"].write_text("from .entropy import f\n")
    assert _imports("entropy", fake["entropy"], fake) == [("attr", 5)]
    assert _imports("attr", fake["attr"], fake) == [("entropy", 1)]


def test_the_old_module_paths_still_import_and_the_names_stay_the_functions():
    """``captum_entropy.compare`` and ``zoo.train`` are the functions, also after the old module
    paths were imported; importing from those paths works, with a warning naming the new one."""
    import importlib
    import warnings

    import captum_entropy
    from captum_entropy import comparison, zoo
    from captum_entropy.zoo import registry, training

    with pytest.warns(DeprecationWarning, match="captum_entropy.comparison"):
        from captum_entropy.compare import compare_models
    assert compare_models is comparison.compare_models
    with pytest.warns(DeprecationWarning, match="captum_entropy.zoo.training"):
        from captum_entropy.zoo.train import TrainConfig
    assert TrainConfig is training.TrainConfig
    old = importlib.import_module("captum_entropy.compare")
    import captum_entropy.zoo.train  # noqa: F401
    assert captum_entropy.compare is comparison.compare and zoo.train is registry.train
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not hasattr(old, "pytestmark") and not hasattr(old, "__wrapped__")  # probes: no warning
