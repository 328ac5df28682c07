"""The one place that builds the Jinja environment for manifest templates.

Sandboxed (templates cannot reach Python internals), StrictUndefined (a typo in a template is
an error, not an empty string), and every ``{{ expression }}`` is finalised through
``to_yaml_literal`` (collections may ask for block style with ``| block(indent)``): templates
lay out YAML structure, values only ever arrive serialised. Input
strings are data passed to templates, never templates themselves, so ``{{ 7*7 }}`` in a model
description stays those characters.
"""

from __future__ import annotations

from typing import Any

from jinja2 import BaseLoader, StrictUndefined, TemplateNotFound, UndefinedError
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from promoter.core.yamltext import to_yaml_block, to_yaml_literal

TemplateError = (TemplateNotFound, UndefinedError, SecurityError, TemplateSyntaxError)


def _finalize(value: Any) -> str:
    return to_yaml_literal(value)


def build_environment(loader: BaseLoader) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=loader,
        undefined=StrictUndefined,
        finalize=_finalize,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters["block"] = to_yaml_block
    return env
