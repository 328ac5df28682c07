"""The paths a kustomization file reads, as written in it (pure).

The CI gate runs on, and selects overlays by, changes under the manifests tree only
(core.gitops_ci, core.policy_scope). A kustomization that reads a local file or directory
outside that tree lets a later merge request change what an overlay deploys without the gate
ever looking, so the gate refuses such a reference (gitops.references resolves them); this
module only lists what each field of a kustomization names.

Listed: every field kustomize v5 resolves as a path relative to the kustomization's
directory, current and deprecated, since a hand-edited tree may use any of them, and a Helm
chart's repository. Inline entries (a patch written as YAML text in a list) name no path and
are skipped. Remote references (URLs, ``github.com/org/repo//dir?ref=...``) are listed too,
like any entry; ``is_remote`` tells them apart by how they are written, as kustomize does.
Where a path is written, kustomize reads only text; anything else there (a number, true/false,
null, a mapping, or a field of another shape) is listed by ``misread_paths`` for the walk to
refuse, so that no entry is skipped because the walk's reader typed it otherwise.

The plugin fields (``PLUGIN_FIELDS``) are not judged entry by entry: a builtin's config, inline
or in a listed file, may itself name a remote file or chart (a PatchTransformer's
``path: https://...``), which kustomize fetches at every build, and any other kind runs an exec
or KRM function plugin; promoter renders none, so gitops.references refuses every entry
(``plugin_entries``).

kustomize reads a kustomization through Go's encoding/json, which matches field names
regardless of case, Unicode folding included (the Kelvin sign U+212A is ``k``, the long s
U+017F is ``s``): ``Transformers:`` or a patch's ``Path:`` works there, while the lookups
here see only the spelling kustomize documents. ``miscased_keys`` lists such keys so that
the walk refuses them rather than guessing which of two spellings kustomize keeps.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

# Entries that are paths (files or kustomization directories) or inline YAML text.
PATH_LISTS = ("resources", "components", "bases", "crds", "configurations", "generators",
              "transformers", "validators", "patchesStrategicMerge")
# Lists of mappings whose ``path`` names a file.
PATH_ENTRIES = ("patches", "patchesJson6902", "replacements")
GENERATORS = ("configMapGenerator", "secretGenerator")
# Entries that configure a plugin (a file or directory of configs, or inline YAML text).
PLUGIN_FIELDS = ("generators", "transformers", "validators")
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
# Every field of a kustomization (kustomize v5's Kustomization type), spelled as kustomize
# documents it (its json tags).
FIELDS = ("apiVersion", "kind", "metadata", "openapi", "namePrefix", "nameSuffix", "namespace",
          "commonLabels", "labels", "commonAnnotations", "patchesStrategicMerge",
          "patchesJson6902", "patches", "images", "imageTags", "replacements", "replicas",
          "vars", "sortOptions", "resources", "components", "crds", "bases",
          "configMapGenerator", "secretGenerator", "helmGlobals", "helmCharts",
          "helmChartInflationGenerator", "generatorOptions", "configurations", "generators",
          "transformers", "validators", "buildMetadata")
_GENERATOR_ARGS = ("name", "namespace", "behavior", "literals", "files", "envs", "env",
                   "options")
# The fields of the entries (a list of mappings, or one mapping) whose fields
# referenced_paths reads: every field the walk reads is here, with its siblings.
ENTRY_FIELDS: dict[str, tuple[str, ...]] = {
    "patches": ("path", "patch", "target", "options"),
    "patchesJson6902": ("path", "patch", "target", "options"),
    "replacements": ("path", "source", "targets"),
    "configMapGenerator": _GENERATOR_ARGS,
    "secretGenerator": (*_GENERATOR_ARGS, "type"),
    "openapi": ("path", "version"),
    "helmGlobals": ("chartHome", "configHome"),
    "helmCharts": ("name", "version", "repo", "releaseName", "namespace",
                   "additionalValuesFiles", "valuesFile", "valuesInline", "valuesMerge",
                   "includeCRDs", "skipHooks", "apiVersions", "kubeVersion", "nameTemplate",
                   "skipTests", "debug"),
    "helmChartInflationGenerator": ("chartName", "chartVersion", "chartRepoUrl", "chartHome",
                                    "chartRepoName", "helmBin", "helmHome", "values",
                                    "valuesLocal", "valuesMerge", "releaseName",
                                    "releaseNamespace", "extraArgs"),
}
# What kustomize fetches instead of reading the checkout: a URL of any scheme (its loader gets
# http(s) files; its git cloner takes https, http, ssh and file URLs), the go-getter prefixes
# ``git::`` and ``gh:``, a bare ``github.com/`` or ``github.com:`` path, and a ``user@host``
# before the first slash (SCP-style ``git@host:org/repo``). Wider than kustomize's own parser
# on purpose: a local name written like one is taken as remote (fail closed).
_REMOTE = re.compile(r"[a-z][a-z0-9+.-]*://|git::|gh:|github\.com[/:]|[^/]*@", re.IGNORECASE)


# A place a path is written (``_path_slots``): (where, value, how). ``how`` is ENTRY for a
# list entry (inline YAML text there names no path), FILE for a generator's ``files`` entry
# (``key=path``), VALUE for a single value, or A_LIST / A_MAPPING for a field or entry of
# another shape than kustomize reads there (``value`` is what stands there instead).
Slot = tuple[str, Any, str]
ENTRY, FILE, VALUE, A_LIST, A_MAPPING = "entry", "file", "value", "a list", "a mapping"


def _listed(where: str, value: Any, how: str) -> Iterator[Slot]:
    if isinstance(value, list):
        for index, entry in enumerate(value):
            yield f"{where}[{index}]", entry, how
    elif value is not None:
        yield where, value, A_LIST


def _keys(where: str, mapping: Any, *keys: str) -> Iterator[Slot]:
    """The single path values of ``mapping`` (a mapping field or list entry) at ``keys``."""
    if not isinstance(mapping, Mapping):
        if mapping is not None:
            yield where, mapping, A_MAPPING
        return
    yield from ((f"{where}.{key}", mapping[key], VALUE) for key in keys if key in mapping)


def _each(where: str, value: Any) -> Iterator[tuple[str, Any]]:
    """(where, entry) of each entry of the list field ``value``; a value that is not a list
    is yielded whole, for ``_keys`` to report as a mapping that is not there (fail closed)."""
    if isinstance(value, list):
        yield from ((f"{where}[{index}]", entry) for index, entry in enumerate(value))
    elif value is not None:
        yield where, value


def _path_slots(kustomization: Mapping[str, Any]) -> Iterator[Slot]:
    """Every place ``kustomization`` writes a path, in the order of its fields, holding
    whatever it holds: the one list both referenced_paths and misread_paths read."""
    for field in PATH_LISTS:
        yield from _listed(field, kustomization.get(field), ENTRY)
    for field in PATH_ENTRIES:
        for where, entry in _each(field, kustomization.get(field)):
            yield from _keys(where, entry, "path")
    for field in GENERATORS:
        for where, generator in _each(field, kustomization.get(field)):
            if not isinstance(generator, Mapping):
                yield from _keys(where, generator)
                continue
            yield from _listed(f"{where}.files", generator.get("files"), FILE)
            yield from _listed(f"{where}.envs", generator.get("envs"), ENTRY)
            yield from _keys(where, generator, "env")
    yield from _keys("openapi", kustomization.get("openapi"), "path")
    yield from _keys("helmGlobals", kustomization.get("helmGlobals"), "chartHome")
    for where, chart in _each("helmCharts", kustomization.get("helmCharts")):
        yield from _keys(where, chart, "valuesFile")
        if isinstance(chart, Mapping):
            yield from _listed(f"{where}.additionalValuesFiles",
                               chart.get("additionalValuesFiles"), ENTRY)
            yield from _keys(where, chart, "repo")
    # Deprecated, still converted into helmCharts by kustomize v5.
    for where, chart in _each("helmChartInflationGenerator",
                              kustomization.get("helmChartInflationGenerator")):
        yield from _keys(where, chart, "chartHome", "values", "chartRepoUrl")


def referenced_paths(kustomization: Mapping[str, Any]) -> list[str]:
    """Every path ``kustomization`` names, in the order of its fields, as written: the text
    of each place a path is written (misread_paths lists what is not text)."""
    found: list[str] = []
    for _, value, how in _path_slots(kustomization):
        if not isinstance(value, str) or not value or how in (A_LIST, A_MAPPING):
            continue
        if how == VALUE:
            found.append(value)
        elif "\n" not in value:   # else inline YAML text in a list, which names no path
            found.append(value.split("=", 1)[-1] if how == FILE else value)
    return found


def misread_paths(kustomization: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    """(where, value, what kustomize reads there: ``text``, ``a list`` or ``a mapping``) of
    each place a path is written that holds something else: a number, true/false, null or a
    mapping where a path is written, a field or entry of another shape. referenced_paths
    skips them, so the walk refuses them (fail closed) rather than judging a reading of its
    own. kustomize v5.5 (``kubectl kustomize``) was seen to read ``resources: [._5]``,
    ``[2001-12-14]``, ``[<<]`` and ``[=]`` as the path of a directory of that name; to
    fail on ``[5]``, ``[0o17]``, ``[1_000]``, ``[yes]``, ``[true]``, ``[.inf]``, a mapping
    entry, ``resources: b`` (not a list) and ``patches: [p.yaml]`` (not a mapping), each
    "cannot unmarshal ... into ... string" (or the list, or struct); and to read a null entry
    as an empty path (``resources: [~]`` fails, a patch's ``path: null`` names none)."""
    return [(where, value, how if how in (A_LIST, A_MAPPING) else "text")
            for where, value, how in _path_slots(kustomization)
            if how in (A_LIST, A_MAPPING) or not isinstance(value, str)]


# Fields whose entries are paths only, never inline YAML: kustomize still takes an entry with a
# line break ("https://host/org/repo.git//dir?ref=main&x=\n") for a remote reference, which
# a walk skipping line-broken entries as inline text never saw.
PATH_ONLY = ("resources", "components", "bases", "crds", "configurations")


def broken_paths(kustomization: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, entry) of each entry of a ``PATH_ONLY`` field holding a control character
    (a line break, a tab...): no path is written so, and the walk reads none of them."""
    found: list[tuple[str, str]] = []
    for field in PATH_ONLY:
        value = kustomization.get(field)
        for entry in value if isinstance(value, list) else []:
            if isinstance(entry, str) and any(ord(ch) < 32 or ord(ch) == 127 for ch in entry):
                found.append((field, entry))
    return found


def plugin_entries(kustomization: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Each entry of a plugin field, with its field: a path, inline YAML text, or whatever
    else is there (a value that is not a list counts as one entry; fail closed)."""
    found: list[tuple[str, Any]] = []
    for field in PLUGIN_FIELDS:
        value = kustomization.get(field)
        entries = value if isinstance(value, list) else [value] if value else []
        found.extend((field, entry) for entry in entries)
    return found


def miscased_keys(kustomization: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Each key, at the top level of ``kustomization`` and in the entries of ``ENTRY_FIELDS``,
    that kustomize may read as a field spelled otherwise: ``(where, key, field)``, ``where``
    empty at the top level or naming the entry (``patches[0]``), ``field`` the spelling
    kustomize documents, or empty for a key that is not ASCII (Go folds some such letters into
    ASCII ones; no field is spelled so, so every one is listed: fail closed)."""
    found = _miscased("", kustomization, FIELDS)
    for field, known in ENTRY_FIELDS.items():
        value = kustomization.get(field)
        if isinstance(value, Mapping):
            found.extend(_miscased(field, value, known))
        for index, entry in enumerate(value if isinstance(value, list) else []):
            if isinstance(entry, Mapping):
                found.extend(_miscased(f"{field}[{index}]", entry, known))
    return found


def _miscased(where: str, mapping: Mapping[Any, Any],
              known: tuple[str, ...]) -> list[tuple[str, str, str]]:
    by_lower = {field.lower(): field for field in known}
    found: list[tuple[str, str, str]] = []
    for key in mapping:
        if not isinstance(key, str):
            continue
        if not key.isascii():
            found.append((where, key, ""))
        elif key.lower() in by_lower and by_lower[key.lower()] != key:
            found.append((where, key, by_lower[key.lower()]))
    return found


def is_remote(reference: str) -> bool:
    """Whether kustomize fetches ``reference`` from elsewhere (``_REMOTE``), whatever the
    checkout holds: for a directory it tries a remote reference before a local path."""
    return bool(_REMOTE.match(reference.strip())) or "://" in reference
