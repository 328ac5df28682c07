"""Custom policy rules as CEL expressions (the language of Kubernetes' ValidatingAdmissionPolicy),
compiled once with ``cel-python`` and checked before promoter starts serving.

Variables: ``model`` and ``version`` (strings), ``env``, ``tags`` and ``params`` (string maps),
``metrics`` (a map of doubles) and ``intent`` (the merged ModelDeployment, with the YAML field
names: ``intent.spec.resources.gpu.count``). A syntax error, an unknown variable or a field the
intent does not have is a ConfigError when the configuration is loaded. At promotion time an
expression that fails (a tag the version lacks) or does not give a bool denies, naming the
expression and the kind of error (never the values it read: a tag may hold a secret).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from promoter.core.masking import without_credentials
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
        # Only free references read a variable: ``tags.all(metrics, ...)`` binds its own
        # ``metrics`` and reads nothing of the run.
        names = frozenset(str(node.children[0]) for node, bound in _scoped(ast, frozenset())
                          if node.data == "ident" and str(node.children[0]) not in bound)
        return cls(name, expression, message,
                   environment.program(ast, functions={"matches": _quiet_matches}),
                   names & VARIABLES)

    def evaluate(self, activation: Mapping[str, Any]) -> tuple[bool, str]:
        from celpy.adapter import json_to_cel
        from celpy.celtypes import BoolType
        from celpy.evaluation import CELEvalError

        said = self.denial
        try:
            value = self._program.evaluate(json_to_cel(dict(activation)))
        except Exception as exc:  # celpy raises several internal types for a failed lookup
            return False, self._not_evaluated(exc)
        if isinstance(value, BoolType | bool):
            return (True, f"holds: {self.expression}") if bool(value) else (False, said)
        if isinstance(value, CELEvalError):
            return False, self._not_evaluated(value)
        return False, f"{said} (the expression gave {type(value).__name__}, not a bool)"

    def _not_evaluated(self, error: BaseException) -> str:
        """The denial with the expression and the kind of error only. celpy's own text quotes
        the values it was handling (``invalid literal for int(): 'hunter2'``, a missing key
        read from another tag, the whole activation), so a tag holding a password would reach
        the MR, MLflow's reason, the audit trail and the logs. The kind is one of a fixed few
        phrases; the rest (configuration text) is masked by its shape as well."""
        # A rule without a message already names its expression ("requires EXPR").
        what = f" {self.expression}" if self.message else ""
        return without_credentials(f"{self.denial} (could not evaluate{what}: "
                                   f"{_error_kind(error)})")


# celpy's errors carry (message, the Python error type, its arguments): the type alone says
# what went wrong, in words that hold no value of the evaluation.
_ERROR_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (KeyError, "a key or field it reads is missing"),
    (IndexError, "an index is out of range"),
    (ZeroDivisionError, "division by zero"),
    (TypeError, "a value has the wrong type for an operator or function"),
    (ValueError, "a value cannot be converted or is invalid"),
    (OverflowError, "a number is out of range"),
)


def _error_kind(error: BaseException) -> str:
    args = error.args
    cause = args[1] if len(args) >= 2 and isinstance(args[1], type) else type(error)
    for kind, words in _ERROR_KINDS:
        if issubclass(cause, kind):
            return words
    return "an evaluation error"


def _unknown_names(ast: Any, intent_fields: Mapping[str, Any] | None) -> Iterator[str]:
    """Unknown top-level variables, and ``intent.a.b`` paths the intent does not have. A macro's
    variable is known only inside that macro: ``[1].all(x, x > 0) && x == 1`` names an unknown
    ``x``, and in ``[intent].all(intent, ...)`` the inner ``intent`` is the macro's."""
    for node, bound in _scoped(ast, frozenset()):
        if node.data == "ident":
            name = str(node.children[0])
            if name not in VARIABLES and name not in bound:
                yield f"unknown variable {name!r}"
        elif node.data == "member_dot":
            path = _dotted(node)
            if path and path[0] == "intent" and "intent" not in bound and \
                    intent_fields is not None:
                problem = _missing(path[1:], intent_fields)
                if problem:
                    yield f"intent has no field {'.'.join(path)!r} ({problem})"


# CEL's comprehension macros, ``target.all(var, predicate)`` (``map`` may take a filter before
# its transform): ``var`` exists only in the arguments after it.
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})


def _scoped(node: Any, bound: frozenset[str]) -> Iterator[tuple[Any, frozenset[str]]]:
    """Every subtree of ``node``, with the macro variables bound where it stands; inner ones
    first (``intent.a`` before ``intent.a.b``: the shortest missing path is named)."""
    variable = _macro_variable(node)
    if variable is None:
        for child in node.children:
            if hasattr(child, "data"):
                yield from _scoped(child, bound)
    else:
        yield from _scoped(node.children[0], bound)      # the target: outside the macro
        for argument in node.children[2].children[1:]:   # the variable itself is no reference
            yield from _scoped(argument, bound | {variable})
    yield node, bound


def _macro_variable(node: Any) -> str | None:
    """The variable a comprehension macro binds, or None for anything else: a method call
    such as ``model.startsWith(prefix)`` binds nothing (``prefix`` must be a variable)."""
    if node.data != "member_dot_arg" or len(node.children) < 3 or \
            str(node.children[1]) not in MACROS:
        return None
    arguments = getattr(node.children[2], "children", [])
    return _ident_name(arguments[0]) if len(arguments) in (2, 3) else None


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


def _quiet_matches(text: Any, pattern: Any) -> Any:
    """CEL's ``matches()``, as celpy's own (RE2) but with RE2's error logging off: RE2 prints a
    pattern it cannot parse straight to the process's stderr (past promoter's log masking),
    and a pattern built from a tag (``model.matches(tags.pin)``) would print that tag's value.
    The error itself becomes the rule's "could not evaluate" reason, without the value."""
    import re2
    from celpy.celtypes import BoolType
    from celpy.evaluation import CELEvalError

    options = re2.Options()
    options.log_errors = False
    try:
        found = re2.compile(pattern, options).search(text)
    except re2.error as exc:
        return CELEvalError("match error", exc.__class__, exc.args)
    return BoolType(found is not None)
