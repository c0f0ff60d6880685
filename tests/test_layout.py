"""The package's shape: modules import one way (no cycle anywhere in omni/), tasks hold no data loading, every
head has its own test file."""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "omni"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """omni modules a file imports, anywhere in it (lazy imports inside functions count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name in MODULES:
                found.add(name)
    # `from omni.attention import masks` names the submodule; the package itself is then reached only through it.
    return {n for n in found if not any(m.startswith(n + ".") for m in found)} | {n for n in found if "." not in n}


def test_no_import_cycle_in_omni():
    graph = {name: _imports(path) - {name} for name, path in MODULES.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt] if nxt in path else [*path, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_mask_layers_depend_one_way():
    order = ["omni.attention.masks", "omni.attention.plans", "omni.attention.kernels"]
    for i, name in enumerate(order):
        later = set(order[i + 1 :])
        assert not (_imports(MODULES[name]) & later), f"{name} imports a later layer"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    importlib.import_module(name)


def test_tasks_hold_no_data_loading_code():
    for path in (PACKAGE / "tasks").glob("*.py"):
        text = path.read_text()
        for word in ("DataLoader", "Dataset", "LightningDataModule", "torch.utils.data"):
            assert word not in text, f"{path.name} uses {word}: data loading belongs in omni/data"


def test_the_image_classifier_is_a_short_task_file():
    assert len((PACKAGE / "tasks/classification.py").read_text().splitlines()) < 80


def test_every_head_has_its_own_test_file():
    heads = [p.stem for p in (PACKAGE / "heads").glob("*.py") if p.stem != "__init__"]
    assert heads
    for head in heads:
        assert (ROOT / f"tests/heads/test_{head}.py").is_file(), (
            f"omni/heads/{head}.py has no tests/heads/test_{head}.py"
        )
