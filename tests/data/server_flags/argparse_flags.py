"""Print every ``--flag`` a Python server's argparse code declares, sorted, one per line.

Reads the given source files without importing them (the servers need GPUs and torch): every
string literal starting with ``--`` passed to an ``add_argument(...)`` call. Fails if a call
names a flag that is not a literal, since the list would then be incomplete.
Usage: python tests/data/server_flags/argparse_flags.py FILE.py... > LIST.txt
(how each list here was made is in PROVENANCE.md).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def declared_flags(source: str) -> set[str]:
    flags: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"):
            continue
        names = [arg.value for arg in node.args
                 if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
        if len(names) != len(node.args):
            raise SystemExit(f"line {node.lineno}: a flag name that is not a literal: "
                             f"{ast.unparse(node)[:100]}")
        flags.update(name for name in names if name.startswith("--"))
    return flags


def main() -> None:
    flags: set[str] = set()
    for path in sys.argv[1:]:
        flags |= declared_flags(Path(path).read_text())
    print("\n".join(sorted(flags)))


if __name__ == "__main__":
    main()
