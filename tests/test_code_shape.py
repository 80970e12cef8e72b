"""The code's shape (issue: one run skeleton): no function in gan/, nadsnet_pvt/ or common/ (the
synthetic frame generator aside) longer than about 70 lines or nested deeper than 4 blocks, so
that each piece, the training loops first, reads in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gan", "nadsnet_pvt", "common")
EXEMPT = ("common/synthetic/",)
MAX_LINES = 70
MAX_DEPTH = 4
BLOCKS = (ast.If, ast.For, ast.While, ast.With, ast.Try, ast.AsyncFor, ast.AsyncWith, ast.Match)
NESTED_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def nesting(node: ast.AST, depth: int = 0) -> int:
    """Deepest block nesting inside `node` (an `elif` counts as its `if`; nested functions are
    measured on their own)."""
    deepest = depth
    for field, value in ast.iter_fields(node):
        children = value if isinstance(value, list) else [value]
        for child in children:
            if not isinstance(child, ast.AST) or isinstance(child, NESTED_SCOPES):
                continue
            is_elif = isinstance(node, ast.If) and field == "orelse" and len(children) == 1 and isinstance(child, ast.If)
            deeper = isinstance(child, BLOCKS) and not is_elif
            deepest = max(deepest, nesting(child, depth + deeper))
    return deepest


def functions():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith(EXEMPT):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield f"{relative}:{node.lineno} {node.name}", node


def test_nesting_measure_counts_blocks_not_elifs():
    code = "def f(x):\n    for a in x:\n        if a:\n            pass\n        elif x:\n            with a:\n                pass\n"
    assert nesting(ast.parse(code).body[0]) == 3


def test_no_function_is_too_long_or_too_deep():
    too_long = [f"{name} ({node.end_lineno - node.lineno + 1} lines)" for name, node in functions()
                if node.end_lineno - node.lineno + 1 > MAX_LINES]
    too_deep = [f"{name} (depth {nesting(node)})" for name, node in functions() if nesting(node) > MAX_DEPTH]
    assert not too_long and not too_deep, (too_long, too_deep)


def test_training_loops_read_in_one_screen():
    for name, node in functions():
        if name.startswith(("gan/train.py", "nadsnet_pvt/train.py")) and node.name == "train":
            assert node.end_lineno - node.lineno + 1 <= 45, name
