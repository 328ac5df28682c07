"""Names that become directories and Kubernetes resource names.

A deployment name is an RFC 1035 label (the strictest DNS rule Kubernetes applies to the
objects we emit: Service and InferenceService names must start with a letter), at most
``MAX_NAME_LENGTH`` characters so that suffixes such as ``-predictor`` still fit in 63, and
not ending in one of KServe's component suffixes (``KSERVE_SUFFIXES``).
"""

from __future__ import annotations

import re
import unicodedata

MAX_NAME_LENGTH = 45
# KServe names the Deployment, Service and HPA of InferenceService <isvc>'s components
# <isvc>-predictor, -transformer and -explainer. A deployment named "foo-predictor" in the
# namespace of model "foo" would render objects of exactly those names, and KServe's
# reconciler looks its Deployment up by name with no owner check, so KServe and Argo CD
# would fight over it. Refusing the suffixes also keeps pods_pattern / deployment_of_pod
# unambiguous: a "<x>-predictor-<hash>-<suffix>" pod can only be KServe's pod of model x.
KSERVE_SUFFIXES = ("-predictor", "-transformer", "-explainer")
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# Characters that change how text displays rather than what it says: C0/C1 controls (a
# terminal reads \x9b as an escape) and the bidirectional overrides and isolates that can
# make "prod" read as something else in an MR, a commit or `git log`.
DISPLAY_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Kubernetes label values: <= 63, alphanumerics with - _ . inside.
_LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def derive_name(model_name: str) -> str:
    """Map a free-form MLflow registered model name to a deployment name.

    Rule: NFKD-fold to ASCII (dropping what has no ASCII form), lowercase, turn every run of
    characters outside ``[a-z0-9]`` into one ``-``, trim ``-`` at both ends, prefix ``m-`` when
    the result starts with a digit, cut to MAX_NAME_LENGTH and trim a trailing ``-``.
    ``Fraud Detector_v2`` -> ``fraud-detector-v2``. Returns "" when nothing usable is left.
    """
    folded = unicodedata.normalize("NFKD", model_name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")
    if slug and slug[0].isdigit():
        slug = "m-" + slug
    return slug[:MAX_NAME_LENGTH].rstrip("-")


def label_problem(name: str) -> str | None:
    """Why ``name`` is not an RFC 1035 label of at most MAX_NAME_LENGTH characters (the rule
    for namespaces, environment and rule names), or None when it is."""
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long; at most {MAX_NAME_LENGTH} are allowed"
    if not _NAME_RE.fullmatch(name):
        return ("must be lowercase letters, digits and '-', start with a letter and end with a "
                "letter or digit (RFC 1035 label)")
    return None


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid deployment name, or None when it is."""
    problem = label_problem(name)
    if problem is not None:
        return problem
    suffix = next((s for s in KSERVE_SUFFIXES if name.endswith(s)), None)
    if suffix is not None:
        model = name[:-len(suffix)]
        return (f"ends in {suffix!r}, the suffix KServe gives the Deployment, Service and HPA "
                f"of model {model!r}'s InferenceService; the two would fight over the same "
                f"objects, so choose a name that does not end in "
                f"{', '.join(repr(s) for s in KSERVE_SUFFIXES)}")
    return None


def suggest_name(name: str) -> str:
    suggestion = derive_name(name) or "my-model"
    if name_problem(suggestion) is not None:  # a KServe suffix: keep it, not at the end
        suggestion = suggestion[:MAX_NAME_LENGTH - len("-model")].rstrip("-") + "-model"
    return suggestion


def kserve_host_problem(name: str, namespace: str) -> str | None:
    """Why KServe cannot give InferenceService ``name`` in ``namespace`` a host name: its
    default domain template (``{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}``, Name
    being the predictor's ``<name>-predictor``) makes one DNS label of all three, at most 63
    characters, and the controller fails every reconcile of a longer one (in both deployment
    modes, even with ingress creation disabled: kserve/kserve#4807)."""
    host = f"{name}-predictor-{namespace}"
    if len(host) <= 63:
        return None
    return (f"KServe's host name label {host!r} would be {len(host)} characters long; DNS "
            f"allows 63, so the InferenceService never reconciles: shorten metadata.name "
            f"(to at most {max(63 - len('-predictor-') - len(namespace), 0)} characters "
            f"here) or the environment's namespace")


def label_value_problem(value: str) -> str | None:
    if len(value) > 63:
        return f"is {len(value)} characters long; Kubernetes label values hold at most 63"
    if not _LABEL_VALUE_RE.fullmatch(value):
        return ("must be letters, digits, '-', '_' or '.', starting and ending with a letter "
                "or digit (Kubernetes label value)")
    return None


# Kubernetes names a ReplicaSet's pods from generateName ``<replicaset>-``, cut to this many
# characters before its 5 random ones (apiserver SimpleNameGenerator: 63 - 5). A Deployment's
# ReplicaSet is ``<deployment>-<pod-template-hash>``, the hash at most 10 characters.
_GENERATED_PREFIX = 58
_HASH = 10


def pods_pattern(name: str) -> str:
    """A PromQL regex (fully anchored, as ``=~`` is) for the pods of deployment ``name``: its
    Deployment's (``name``) or KServe's (``name-predictor``) ReplicaSet pods,
    ``<deployment>-<pod-template-hash>-<suffix>``. ``name-.*`` also matched other models that
    share the prefix (``llama`` took in ``llama-70b``'s pods), in forecasts, KEDA triggers,
    right-sizing evidence and measured cold starts.

    A KServe predictor's prefix is 11 characters longer: from a 37-character name on,
    Kubernetes cuts ``<hash>-`` short before the random suffix, leaving ``room`` characters
    of it (the hash's first ones, no dash when the hash is longer than that)."""
    plain = f"{name}-[a-z0-9]{{1,{_HASH}}}-[a-z0-9]{{5}}"
    prefix = f"{name}-predictor-"
    room = _GENERATED_PREFIX - len(prefix)  # characters left for "<hash>-"
    if room > _HASH:
        return f"{name}(-predictor)?-[a-z0-9]{{1,{_HASH}}}-[a-z0-9]{{5}}"
    # room >= 2: a name holds at most MAX_NAME_LENGTH (45) characters.
    cut = f"(?:[a-z0-9]{{1,{room - 1}}}-|[a-z0-9]{{{room}}})"
    return f"(?:{plain}|{prefix}{cut}[a-z0-9]{{5}})"


# Also a KServe pod whose "<hash>-" was cut short (see pods_pattern): 2-10 hash characters
# without the dash, then the 5 random ones.
_POD_SUFFIX = re.compile(r"(?:(-predictor)?(-[a-z0-9]{1,10})?-[a-z0-9]{5}"
                         r"|-predictor-[a-z0-9]{7,15})$")


def deployment_of_pod(pod: str) -> str:
    """The deployment name a pod belongs to (the inverse of ``pods_pattern``): its ReplicaSet
    hash and suffix dropped, and KServe's ``-predictor``; "" when nothing is left."""
    return _POD_SUFFIX.sub("", pod)
