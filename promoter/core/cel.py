"""Custom policy rules as CEL expressions (the language of Kubernetes' ValidatingAdmissionPolicy),
compiled once with ``cel-python`` and checked before promoter starts serving.

Variables: ``model`` and ``version`` (strings), ``env``, ``tags`` and ``params`` (string maps),
``metrics`` (a map of doubles) and ``intent`` (the merged ModelDeployment, with the YAML field
names: ``intent.spec.resources.gpu.count``). A syntax error, an unknown variable or a field the
intent does not have is a ConfigError when the configuration is loaded. At promotion time an
expression that fails (a tag the version lacks) or does not give a bool denies, with its reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from promoter.errors import ConfigError

VARIABLES = frozenset({"model", "version", "env", "tags", "params", "metrics", "intent"})
# The variables that come from the version's run (core.lineage decides whether it is trusted).
RUN_VARIABLES = frozenset({"params", "metrics"})


@dataclass(frozen=True)
class CelRule:
    name: str
    expression: str
    message: str = ""         # said when the rule denies; default: the expression
    _program: Any = field(default=None, compare=False, repr=False)
    # The variables the expression names; unknown (all of them) unless compiled here.
    variables: frozenset[str] = field(default=VARIABLES, compare=False, repr=False)

    @property
    def reads_run(self) -> bool:
        return bool(self.variables & RUN_VARIABLES)

    @property
    def denial(self) -> str:
        return self.message or f"requires {self.expression}"

    @classmethod
    def compile(cls, name: str, expression: str, message: str,
                intent_fields: Mapping[str, Any] | None) -> CelRule:
        """Compile and check; ``intent_fields`` is a sample intent (its field names are the
        known ones; None skips that check)."""
        import celpy
        from celpy.celparser import CELParseError
        from lark import Tree

        environment = celpy.Environment()
        try:
            ast = environment.compile(expression)
        except CELParseError as exc:
            first = " ".join(str(exc).split())[:200]
            raise ConfigError(f"policy rule {name!r}: CEL syntax error: {first}") from None
        assert isinstance(ast, Tree)
        for problem in _unknown_names(ast, intent_fields):
            raise ConfigError(f"policy rule {name!r}: {problem}",
                              hint="variables: " + ", ".join(sorted(VARIABLES)))
        names = frozenset(str(node.children[0]) for node in ast.iter_subtrees()
                          if node.data == "ident") & VARIABLES
        return cls(name, expression, message, environment.program(ast), names)

    def evaluate(self, activation: Mapping[str, Any]) -> tuple[bool, str]:
        from celpy.adapter import json_to_cel
        from celpy.celtypes import BoolType
        from celpy.evaluation import CELEvalError

        said = self.denial
        try:
            value = self._program.evaluate(json_to_cel(dict(activation)))
        except Exception as exc:  # celpy raises several internal types for a failed lookup
            return False, f"{said} (could not evaluate: {_reason(exc)})"
        if isinstance(value, BoolType | bool):
            return (True, f"holds: {self.expression}") if bool(value) else (False, said)
        if isinstance(value, CELEvalError):
            return False, f"{said} (could not evaluate: {_reason(value)})"
        return False, f"{said} (the expression gave {type(value).__name__}, not a bool)"


def _reason(error: BaseException) -> str:
    """celpy's errors carry (message, python type, arguments): say 'no such key: reviewed_by'."""
    args = error.args
    if len(args) >= 3 and isinstance(args[0], str) and isinstance(args[2], tuple) and args[2]:
        text = f"{args[0]}: {', '.join(str(arg) for arg in args[2])}"
    elif args and isinstance(args[0], str):
        text = args[0]
    else:
        text = str(error)
    return " ".join(text.split())[:160]


def _unknown_names(ast: Any, intent_fields: Mapping[str, Any] | None) -> Iterator[str]:
    """Unknown top-level variables, and ``intent.a.b`` paths the intent does not have."""
    bound = set()  # macro variables: tags.all(k, ...) binds k
    for node in ast.iter_subtrees():
        if node.data == "member_dot_arg" and len(node.children) > 2:
            arguments = node.children[2].children
            if arguments:
                name = _ident_name(arguments[0])
                if name:
                    bound.add(name)
    for node in ast.iter_subtrees():
        if node.data == "ident":
            name = str(node.children[0])
            if name not in VARIABLES and name not in bound:
                yield f"unknown variable {name!r}"
        elif node.data == "member_dot":
            path = _dotted(node)
            if path and path[0] == "intent" and intent_fields is not None:
                problem = _missing(path[1:], intent_fields)
                if problem:
                    yield f"intent has no field {'.'.join(path)!r} ({problem})"


def _ident_name(node: Any) -> str | None:
    """The identifier an expression consists of, if it is nothing else (``k``)."""
    found = [tree for tree in node.iter_subtrees() if tree.data == "ident"]
    leaves = [tree for tree in node.iter_subtrees() if not tree.children or
              all(not hasattr(child, "data") for child in tree.children)]
    return str(found[0].children[0]) if len(found) == 1 and len(leaves) == 1 else None


def _dotted(node: Any) -> list[str] | None:
    """``a.b.c`` of a member_dot chain rooted at a plain identifier, else None."""
    names: list[str] = []
    while getattr(node, "data", None) == "member_dot":
        names.append(str(node.children[1]))
        node = node.children[0]
        while getattr(node, "data", None) in ("member", "primary") and len(node.children) == 1:
            node = node.children[0]
    if getattr(node, "data", None) == "ident":
        return [str(node.children[0]), *reversed(names)]
    return None


def _missing(path: list[str], fields: Any) -> str | None:
    for depth, name in enumerate(path):
        if not isinstance(fields, Mapping):
            return None  # a scalar or list: CEL itself reports misuse at evaluation
        if path[:depth] == ["spec", "environments"]:
            return None  # free-form environment names below
        if name not in fields:
            return "known at that level: " + ", ".join(sorted(fields))[:200]
        fields = fields[name]
    return None
