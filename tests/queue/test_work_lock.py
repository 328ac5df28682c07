"""The lock serialising one (model, env)'s enqueues: distinct pairs never share it, whatever a
registered-model name holds ("/", quotes, spaces: MLflow allows almost anything)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from promoter.core.naming import name_problem
from promoter.service.queue_ops import work_lock

MODEL_NAMES = st.text(min_size=1, max_size=40)
# Environment names as settings accepts them (RFC 1035 labels).
ENV_NAMES = st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True).filter(
    lambda name: name_problem(name) is None)


@given(MODEL_NAMES, ENV_NAMES, MODEL_NAMES, ENV_NAMES)
def test_distinct_model_and_environment_pairs_take_distinct_locks(
        model: str, env: str, other_model: str, other_env: str) -> None:
    # The pair reads back from its name one way only: the environment holds no "/".
    assert work_lock(model, env).removeprefix("jobs:").rsplit("/", 1) == [model, env]
    same_pair = (model, env) == (other_model, other_env)
    assert (work_lock(model, env) == work_lock(other_model, other_env)) == same_pair


def test_a_slash_in_a_model_name_does_not_reach_another_pair() -> None:
    assert work_lock("fraud/production", "staging") != work_lock("fraud", "production")
    assert work_lock("fraud/production", "staging").endswith("/staging")
