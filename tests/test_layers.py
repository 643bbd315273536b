"""Every module of app/ sits in a layer of the import-linter contract, so none escapes the check."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_module_is_in_a_layer():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    layered = {name.strip() for layer in contract["layers"] for name in re.split(r"[:|]", layer)}
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in (ROOT / "app").rglob("*.py")
    }
    # The factory (app) composes everything; a package's __init__ may stay out while it imports nothing.
    unlisted = {
        module
        for module in modules - {"app"}
        if not any(module == name or module.startswith(name + ".") for name in layered)
        and not _imports_nothing(ROOT / module.replace(".", "/") / "__init__.py")
    }
    assert unlisted == set(), f"add these to a layer in pyproject.toml: {sorted(unlisted)}"


def _imports_nothing(init: Path) -> bool:
    return init.exists() and not re.search(r"^\s*(import|from)\s", init.read_text(), re.MULTILINE)


def test_no_cycle_between_app_packages():
    """Layers bind modules; packages must not import each other in a circle either (app/users ↔ app/clerk was one)."""
    import grimp

    graph = grimp.build_graph("app")

    def package(module: str) -> str:
        return ".".join(module.split(".")[:2])

    imports: dict[str, set[str]] = {}
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if package(module) not in (package(imported), "app"):
                imports.setdefault(package(module), set()).add(package(imported))

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in imports.get(start, ())
        )

    circular = sorted(p for p in imports if reaches(p, p, {p}))
    assert circular == [], f"these packages import each other in a circle: {circular}"
