"""The shape of evolve/, checked from its source: the import graph (every import, function-level ones
included) has no cycle, the configs import no execution code, ``detector`` is imported by exactly one
module (the built-in trainer's adapter), no file is over 400 lines, the execution seam defines no class
inside a function, trials get a typed ``TrialSpec`` (no ``static`` dict) whose settings are typed fields (no
detector or surrogate settings smuggled in ``extra["detector"]`` or ``extra["surrogate"]``), and Ray Tune and
Ultralytics are imported at module level only by the modules that need them, which nothing imports at module
level."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "evolve"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> set[str]:
    """Every module named by an import anywhere in the file (resolved to the longest known module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def evolve_edges(name: str) -> set[str]:
    """The evolve modules ``name`` imports (a package counts as its ``__init__``)."""
    return {m for m in imports(MODULES[name]) if m in MODULES and m != name and m != "evolve"}


def test_the_import_graph_of_evolve_has_no_cycle():
    graph = {name: evolve_edges(name) for name in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_configs_import_no_execution_loops_or_output_code():
    for name in (n for n in MODULES if n.startswith("evolve.config")):
        bad = {m for m in evolve_edges(name)
               if not (m.startswith("evolve.config") or m == "evolve.errors")}
        assert not bad, f"{name} imports {sorted(bad)}"


def test_search_is_pure():
    for name in (n for n in MODULES if n.startswith("evolve.search")):
        found = imports(MODULES[name])
        assert not {m for m in found if m.split(".")[0] == "ray"}, name
        bad = {m for m in evolve_edges(name) if m.startswith(("evolve.execution", "evolve.loops",
                                                               "evolve.output"))}
        assert not bad, f"{name} imports {sorted(bad)}"


def test_detector_is_imported_by_exactly_one_module_the_trainer_adapter():
    users = sorted(name for name in MODULES
                   if any(m == "detector" or m.startswith("detector.") for m in imports(MODULES[name])))
    assert users == ["evolve.execution.detector_trainer"]


def test_detector_does_not_import_evolve():
    for path in (ROOT / "detector").rglob("*.py"):
        assert not any(m == "evolve" or m.startswith("evolve.") for m in imports(path)), path


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_file_is_over_400_lines_and_each_says_what_it_is_for(name):
    path = MODULES[name]
    lines = path.read_text().count("\n")
    assert lines <= MAX_LINES, f"{path}: {lines} lines"
    assert ast.get_docstring(ast.parse(path.read_text())), f"{path}: no module docstring"


def test_detector_cli_takes_its_flags_and_defaults_from_train_config():
    """``python -m detector`` is generated from ``TrainConfig``'s field metadata: cli.py declares no flag of
    a TrainConfig field by hand, writes no default into a help text and gives argparse no default but None."""
    from dataclasses import fields

    from detector.cli import build_parser
    from detector.config import TrainConfig, flagged_fields

    calls = [node for node in ast.walk(ast.parse((ROOT / "detector" / "cli.py").read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument"]
    by_hand = {arg.value for call in calls for arg in call.args
               if isinstance(arg, ast.Constant) and str(arg.value).startswith("-")}
    field_flags = {spec.flag for _, spec in flagged_fields()}
    field_flags |= {"--" + f.name.replace("_", "-") for f in fields(TrainConfig)}
    assert not by_hand & field_flags, sorted(by_hand & field_flags)
    for call in calls:
        for kw in call.keywords:
            texts = [n.value for n in ast.walk(kw.value) if isinstance(n, ast.Constant)]
            if kw.arg == "help":
                assert not any("(default" in str(t) for t in texts), texts
            if kw.arg == "default":
                assert isinstance(kw.value, ast.Constant) and kw.value.value is None, ast.dump(kw)
    train = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    assert field_flags & {s for a in train._actions for s in a.option_strings} == \
        {spec.flag for _, spec in flagged_fields() if "train" in spec.commands}


EXECUTION = sorted(n for n in MODULES if n.startswith("evolve.execution"))
# Modules whose optional or heavy dependency is imported at their top; each is imported by others only
# inside a function, where the dependency is needed (as Ray Tune does for its searchers).
LAZY = {"evolve.execution.tune_glue": "ray", "evolve.execution.asha": "ray",
        "evolve.execution.ultralytics_trial": "ultralytics"}


@pytest.mark.parametrize("name", EXECUTION)
def test_no_class_is_defined_inside_a_function_in_execution(name):
    tree = ast.parse(MODULES[name].read_text())
    for func in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        inner = [n.name for n in ast.walk(func) if isinstance(n, ast.ClassDef)]
        assert not inner, f"{name}: class {inner[0]} defined inside {func.name}()"


@pytest.mark.parametrize("name", EXECUTION + ["benchmarks.memory"])
def test_trials_get_a_trial_spec_not_a_static_dict(name):
    path = MODULES.get(name) or ROOT / (name.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
    assert "static" not in names, f"{name}: a 'static' dict; trials take a TrialSpec"


def _tuples_of(tree: ast.AST, values: set[tuple[str, ...]]) -> list[int]:
    """Lines of the tuple literals of strings in ``values``."""
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Tuple) and node.elts
            and all(isinstance(e, ast.Constant) for e in node.elts)
            and tuple(e.value for e in node.elts) in values]


def test_the_detectors_model_sizes_and_optimizers_are_declared_once_in_evolve_and_agree():
    """``evolve.config.trial`` may not import the detector, so it declares the detector's model sizes and
    optimizer names itself: they must be the detector's, and no other evolve module spells them out."""
    from detector.config import MODEL_SIZES, OPTIMIZER_CHOICES
    from detector.hyp import HYP_OPTIMIZERS
    from evolve.config import trial

    assert (trial.MODEL_SIZES, trial.OPTIMIZERS, trial.DETECTOR_OPTIMIZERS) == \
        (MODEL_SIZES, OPTIMIZER_CHOICES, HYP_OPTIMIZERS)
    spelled = {trial.MODEL_SIZES, trial.OPTIMIZERS, trial.DETECTOR_OPTIMIZERS}
    assert _tuples_of(ast.parse('a = ("n", "s", "m")\nb = ("SGD", "Adam")'), spelled) == [1]
    again = [f"{name}:{line}" for name, path in MODULES.items() if name != "evolve.config.trial"
             for line in _tuples_of(ast.parse(path.read_text()), spelled)]
    assert not again, f"the detector's model sizes or optimizers spelled out again at {again}"


# Settings a trial and a standalone training run mean differently, each default chosen for its use.
TRIAL_DEFAULTS = {
    "project": "a trial writes under its run folder, not runs/train",
    "name": "the runner names each trial's folder after its trial id",
    "exist_ok": "a retried trial writes into its own folder again",
    "progress": "nobody watches a trial's progress bar",
    "save_weights": "a run has thousands of trials; a standalone run keeps its weights",
}


def test_a_trial_and_a_standalone_training_share_every_other_default():
    """``TrialConfig`` repeats the fields it shares with the detector's ``TrainConfig`` (it may not import
    the detector); their defaults must agree, except the settings that mean a different thing for a trial."""
    from dataclasses import MISSING, fields

    from detector.config import TrainConfig
    from evolve.config.trial import TrialConfig

    def defaults(cls) -> dict:
        return {f.name: f.default if f.default is not MISSING else f.default_factory()
                for f in fields(cls) if f.default is not MISSING or f.default_factory is not MISSING}

    trial, train = defaults(TrialConfig), defaults(TrainConfig)
    shared = sorted(set(trial) & set(train))
    assert {"epochs", "batch", "workers", "model", "optimizer", "imgsz", "seed", "val_every"} <= set(shared)
    differ = {name for name in shared if trial[name] != train[name]}
    assert differ == set(TRIAL_DEFAULTS), f"defaults of {sorted(differ ^ set(TRIAL_DEFAULTS))} disagree"


OUR_KEYS = ("detector", "surrogate")  # keys our own settings once travelled under in ``extra``


def _extra_ours(tree: ast.AST) -> list[int]:
    """Lines reading or writing ``extra["detector"]`` or ``extra["surrogate"]`` (subscript, ``get``, ``pop``,
    ``setdefault``, or a literal ``extra={...}`` argument with such a key) or naming ``OTHER_SETTINGS``, the
    key detector settings once travelled under."""
    def is_extra(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "extra") or \
            (isinstance(node, ast.Name) and node.id == "extra")

    def ours(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and node.value in OUR_KEYS

    lines = []
    for node in ast.walk(tree):
        named = isinstance(node, ast.Name) and node.id == "OTHER_SETTINGS"
        indexed = isinstance(node, ast.Subscript) and is_extra(node.value) and ours(node.slice)
        looked_up = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
            is_extra(node.func.value) and bool(node.args) and ours(node.args[0])
        passed = isinstance(node, ast.keyword) and node.arg == "extra" and isinstance(node.value, ast.Dict) and \
            any(ours(key) for key in node.value.keys)
        if named or indexed or looked_up or passed:
            lines.append(node.value.lineno if passed else node.lineno)
    return lines


def test_no_setting_reaches_a_trial_through_extra():
    """A trial's settings are ``TrialConfig`` fields (``from_any`` refuses others by name, ``__post_init__``
    refuses ``extra["surrogate"]``); ``extra`` belongs to a user's trainer. The rule catches the shapes it
    replaced."""
    assert _extra_ours(ast.parse('v = cfg.extra["detector"]\nextra.pop("surrogate")\nOTHER_SETTINGS\n'
                                 'TrainConfig(epochs=1, extra={"surrogate": {}})\nx = extra.get("mine")')) \
        == [1, 2, 3, 4]
    paths = [*MODULES.values(), ROOT / "orchestrate.py", *(ROOT / "benchmarks").glob("*.py")]
    found = [f"{p.relative_to(ROOT)}:{line}" for p in paths
             for line in _extra_ours(ast.parse(p.read_text()))]
    assert not found, f"extra['detector'], extra['surrogate'] or OTHER_SETTINGS at {found}; give TrialConfig " \
                      "a typed field"


def module_level_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("name", sorted(LAZY))
def test_optional_dependencies_live_in_modules_imported_only_where_needed(name):
    assert any(m.split(".")[0] == LAZY[name] for m in module_level_imports(MODULES[name])), name
    eager = sorted(other for other in MODULES if name in module_level_imports(MODULES[other]))
    assert not eager, f"{name} (which imports {LAZY[name]} at its top) is imported at module level by {eager}"
    for other in MODULES:  # and nothing else imports the dependency at its top
        if other not in LAZY:
            top = {m.split(".")[0] for m in module_level_imports(MODULES[other])}
            assert not top & {"ray", "ultralytics"}, f"{other} imports ray or ultralytics at its top"
