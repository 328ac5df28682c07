"""The one way promoter reads YAML that others wrote: `kustomize build` output and intents.

Kustomize writes with go-yaml v3 (through kyaml), and the text it writes may hold what a model
owner typed (a description, a registered-model name). go-yaml writes a string plain unless
its own resolver (gopkg.in/yaml.v3 resolve.go) would read that text back as something else,
and that resolver knows only: null ``~ null Null NULL`` and empty; bool
``true True TRUE false False FALSE``; ints (Go's ``ParseInt`` with base prefixes, ``_``
dropped), floats matching ``yamlStyleFloat``, ``.inf .nan`` in three spellings, timestamps,
and ``<<``. ruamel's YAML 1.2 resolver reads more than that: ``._5`` as the float 0.5,
``=`` as a "value" tag, and ``._``, ``+_`` or ``-_`` as numbers it then fails to build (a bare
ValueError, not a YAMLError); kyaml also writes an annotation value of ``<<`` plain. Each of
those left the CI gates with an unexpected error or a false schema problem on the whole tree.

So this reader resolves only the YAML 1.2 core schema, spelled as go-yaml spells it, without
underscores, merge keys, value tags, timestamps or 1.1 words (``yes``, ``on``): the narrowest
reading, so every plain scalar go-yaml writes as a string stays a string here, and what this
reader takes for a number or boolean go-yaml does too. (A leading-zero int such as ``0777`` is
decimal here and octal to go-yaml; go-yaml quotes such a string, so text never changes type.)
Explicit tags (``!!float x``) still reach ruamel's constructors, so loading may also raise
ValueError (as may an int longer than Python converts); callers get one UserError either way.
"""

from __future__ import annotations

import re
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.resolver import BaseResolver

from promoter.errors import UserError

# What loading untrusted text can raise besides YAMLError: a constructor refusing an explicitly
# tagged scalar or an over-long int (ValueError), nesting deeper than Python recurses.
READ_ERRORS: tuple[type[Exception], ...] = (YAMLError, ValueError, RecursionError)

_NUMBER_START = list("-+0123456789.")
_CORE_SCHEMA: tuple[tuple[str, str, list[str]], ...] = (
    ("tag:yaml.org,2002:null", r"(?:~|null|Null|NULL|)\Z", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", r"(?:true|True|TRUE|false|False|FALSE)\Z", list("tTfF")),
    ("tag:yaml.org,2002:int", r"(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)\Z", list("-+0123456789")),
    ("tag:yaml.org,2002:float",
     r"(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
     r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))\Z", _NUMBER_START),
)


class CoreSchemaResolver(BaseResolver):
    """Implicit tags of the YAML 1.2 core schema only (see the module docstring for why)."""

    yaml_implicit_resolvers: dict[Any, Any] = {}

    def __init__(self, version: Any = None, loader: Any = None, loadumper: Any = None) -> None:
        # ruamel builds its resolver as Resolver(version=..., loader=...); a %YAML directive
        # in the text does not switch this one to 1.1 rules.
        super().__init__(loader if loader is not None else loadumper)

    @property
    def processing_version(self) -> Any:
        return (1, 2)   # what ruamel's constructors ask to choose 1.2 number rules


for _tag, _pattern, _first in _CORE_SCHEMA:
    # The _base variant: ruamel's add_implicit_resolver also registers into the resolvers of
    # every other YAML instance in the process.
    CoreSchemaResolver.add_implicit_resolver_base(_tag, re.compile(_pattern), _first)


def core_schema_yaml() -> YAML:
    """A safe, pure ruamel reader resolving only the YAML 1.2 core schema."""
    yaml = YAML(typ="safe", pure=True)
    yaml.Resolver = CoreSchemaResolver
    return yaml


def load_documents(text: str, *, what: str) -> list[Any]:
    """Every document of ``text`` (`kustomize build` output); UserError naming ``what`` when
    it cannot be read."""
    try:
        return list(core_schema_yaml().load_all(text))
    except READ_ERRORS as exc:
        raise UserError(f"{what} is not YAML: {one_line(exc)}") from None


def one_line(exc: BaseException) -> str:
    """One line saying why, for a message (a parser's errors span several)."""
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__
