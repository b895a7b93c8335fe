"""Configs: presets, policy files with `extends` (the Rust parser), RETRY_* overrides, bad input."""

from __future__ import annotations

import math

import pytest

from ricochet import PRESETS, PolicyFileError, RetryConfig, RetryConfigError, from_env, load_policies, load_policy


def test_presets_are_the_seeds():
    d, a, c = PRESETS["default"], PRESETS["aggressive"], PRESETS["conservative"]
    assert (d.max_attempts, d.initial_delay, d.max_delay, d.exponential_base, d.jitter, d.jitter_factor,
            d.slot_count, d.slot_width, d.coordination_enabled, d.idempotency_ttl) == \
        (3, 0.1, 10.0, 2.0, True, 0.1, 10, 0.1, True, 3600.0)
    assert (a.max_attempts, a.initial_delay, a.max_delay, a.exponential_base, a.jitter_factor, a.slot_count,
            a.slot_width, a.idempotency_ttl) == (5, 0.05, 5.0, 1.5, 0.1, 20, 0.05, 1800.0)
    assert (c.max_attempts, c.initial_delay, c.max_delay, c.exponential_base, c.jitter_factor, c.slot_count,
            c.slot_width, c.idempotency_ttl) == (2, 0.5, 15.0, 2.0, 0.05, 5, 0.2, 7200.0)
    assert RetryConfig() == d
    assert RetryConfig.preset("aggressive") == a
    assert RetryConfig(max_attempts=3) == d


def test_seed_keywords_and_extensions():
    c = RetryConfig(max_attempts=5, initial_delay=0.1, max_delay=5.0, jitter=True, strategy="full",
                    max_elapsed=30, slot_capacity=4, retry_on=["ConnectionError", "timeout_error"])
    assert (c.max_attempts, c.max_delay, c.strategy, c.max_elapsed, c.slot_capacity) == (5, 5.0, "full", 30.0, 4)
    assert c.retry_on == ["ConnectionError", "TimeoutError"]
    assert c.replace(max_attempts=7).max_attempts == 7
    assert "max_attempts=5" in repr(c)
    assert c.to_dict()["strategy"] == "full"


def test_policy_file_with_extends(tmp_path):
    p = tmp_path / "policies.yaml"
    p.write_text(
        "retry_policies:\n"
        "  default:\n    max_attempts: 4\n"
        "  critical:\n    extends: aggressive\n    max_attempts: 7\n"
        "  critical_slow:\n    extends: critical\n    initial_delay: 0.2\n"
    )
    policies = load_policies(p)
    assert policies["default"].max_attempts == 4
    assert policies["critical"].max_attempts == 7
    assert policies["critical"].slot_count == 20  # from aggressive
    assert policies["critical_slow"].initial_delay == 0.2
    assert policies["critical_slow"].max_attempts == 7
    assert load_policy("critical", p, environ={}).max_attempts == 7
    assert load_policy("conservative", p, environ={}) == PRESETS["conservative"]


def test_policy_file_errors_are_all_reported_with_locations(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(
        "retry_policies:\n"
        "  a:\n    max_attempts: 0\n"
        "  b:\n    jitter_factor: 1.5\n"
        "  c:\n    extends: nowhere\n"
    )
    with pytest.raises(PolicyFileError) as info:
        load_policies(p)
    e = info.value
    assert isinstance(e, ValueError)
    text = str(e)
    assert "max_attempts must be at least 1, got 0" in text
    assert "jitter_factor must be within [0.0, 1.0], got 1.5" in text
    assert "unknown policy `nowhere`" in text
    assert f"{p}:3:" in text  # line of a's max_attempts
    assert {err[2] for err in e.errors} >= {"max_attempts", "jitter_factor", "extends"}


def test_policy_file_same_messages_as_ricochet_check(tmp_path, ricochet_bin):
    import subprocess

    p = tmp_path / "bad.yaml"
    p.write_text("retry_policies:\n  a:\n    initial_delay: -1\n  b:\n    exponential_base: .nan\n")
    check = subprocess.run([ricochet_bin, "check", str(p)], capture_output=True, text=True)
    assert check.returncode == 2
    with pytest.raises(PolicyFileError) as info:
        load_policies(p)
    for line in str(info.value).splitlines():
        assert line in check.stdout + check.stderr, (line, check.stdout, check.stderr)


def test_env_overrides():
    env = {"RETRY_MAX_ATTEMPTS": "6", "RETRY_INITIAL_DELAY": "0.2", "RETRY_MAX_DELAY": "3.5", "RETRY_JITTER": "false"}
    c = from_env(environ=env)
    assert (c.max_attempts, c.initial_delay, c.max_delay, c.jitter) == (6, 0.2, 3.5, False)
    assert from_env(PRESETS["aggressive"], {"RETRY_MAX_ATTEMPTS": "2"}).slot_count == 20
    assert load_policy("default", None, {"RETRY_MAX_ATTEMPTS": "9"}).max_attempts == 9


def test_env_override_errors_name_variable_and_value():
    with pytest.raises(RetryConfigError) as info:
        from_env(environ={"RETRY_MAX_ATTEMPTS": "three"})
    assert info.value.field == "RETRY_MAX_ATTEMPTS"
    assert "three" in str(info.value)
    with pytest.raises(ValueError) as info2:
        from_env(environ={"RETRY_MAX_DELAY": "0.01"})  # below initial_delay: the core says so
    assert "initial_delay" in str(info2.value)


BAD = [
    (dict(max_attempts=0), "max_attempts", "0"),
    (dict(max_attempts=-1), "max_attempts", "-1"),
    (dict(max_attempts=2**64), "max_attempts", "18446744073709551616"),
    (dict(max_attempts=10**400), "max_attempts", "1000000000"),
    (dict(max_attempts=5000), "max_attempts", "5000"),
    (dict(max_attempts=2.5), "max_attempts", "2.5"),
    (dict(max_attempts="3"), "max_attempts", "'3'"),
    (dict(max_attempts=True), "max_attempts", "True"),
    (dict(initial_delay=math.nan), "initial_delay", "NaN"),
    (dict(initial_delay=-0.5), "initial_delay", "-0.5"),
    (dict(initial_delay=20.0), "initial_delay", "20"),
    (dict(max_delay=math.inf), "max_delay", "inf"),
    (dict(max_delay=10**400), "max_delay", "1000000000"),
    (dict(max_delay="10"), "max_delay", "'10'"),
    (dict(exponential_base=0.5), "exponential_base", "0.5"),
    (dict(exponential_base=math.nan), "exponential_base", "NaN"),
    (dict(jitter_factor=1.5), "jitter_factor", "1.5"),
    (dict(jitter_factor=-0.1), "jitter_factor", "-0.1"),
    (dict(jitter="yes"), "jitter", "'yes'"),
    (dict(slot_count=0), "slot_count", "0"),
    (dict(slot_count=-3), "slot_count", "-3"),
    (dict(slot_width=-1.0), "slot_width", "-1"),
    (dict(idempotency_ttl=1e300), "idempotency_ttl", "1e300"),
    (dict(idempotency_ttl=-5), "idempotency_ttl", "-5"),
    (dict(strategy="wild"), "strategy", "wild"),
    (dict(max_elapsed=math.nan), "max_elapsed", "NaN"),
    (dict(slot_capacity=0), "slot_capacity", "0"),
    (dict(retry_on=["Teapot"]), "retry_on", "Teapot"),
    (dict(retry_on="ConnectionError"), "retry_on", "ConnectionError"),
    (dict(circuit_breaker={"failure_threshold": 1}), "circuit_breaker", "failure_rate"),
    (dict(circuit_breaker={"failure_threshold": 5, "failure_rate": 2, "minimum_calls": 10, "window": 10,
                           "cool_down": 5, "half_open_probes": 1}), "circuit_breaker.failure_rate", "2"),
    (dict(retry_budget={"max_tokens": 0, "token_ratio": 0.1}), "retry_budget.max_tokens", "0"),
    (dict(retry_budget=[1, 2]), "retry_budget", "[1, 2]"),
]


@pytest.mark.parametrize("kwargs,field,value", BAD, ids=[f"{f}={v}" for _, f, v in BAD])
def test_bad_input_is_a_value_error_naming_field_and_value(kwargs, field, value):
    with pytest.raises(ValueError) as info:
        RetryConfig(**kwargs)
    e = info.value
    assert isinstance(e, RetryConfigError)
    assert e.field == field, str(e)
    assert field.split(".")[0] in str(e) and value in str(e), str(e)


def test_slot_count_zero_is_fine_without_coordination():
    assert RetryConfig(slot_count=0, coordination_enabled=False).slot_count == 0


def test_unknown_keyword_and_preset():
    # A typo is a TypeError naming the keyword, as for any Python function, in both forms.
    with pytest.raises(TypeError, match="'max_retries'"):
        RetryConfig(max_retries=3)
    with pytest.raises(TypeError, match="'jiter'"):
        RetryConfig().replace(jiter=False)
    assert RetryConfig(max_attempts=5, jitter=None).replace(jitter=False, max_delay=None) == RetryConfig(
        max_attempts=5, jitter=False)  # None keeps a field as it is
    with pytest.raises(RetryConfigError) as info:
        RetryConfig.preset("reckless")
    assert "reckless" in str(info.value)


def test_bad_runtime_values_from_python():
    c = PRESETS["default"]
    with pytest.raises(RetryConfigError, match="seed"):
        c.plan(-1)
    with pytest.raises(RetryConfigError, match="seed"):
        c.plan(2**64)
    with pytest.raises(RetryConfigError, match="seed"):
        c.plan(math.nan)
    from ricochet import RetryPolicy

    with pytest.raises(RetryConfigError, match="attempt_timeout") as info:
        RetryPolicy(c, attempt_timeout=math.nan, logger=False)
    assert info.value.field == "attempt_timeout" and math.isnan(info.value.value)
    for bad in (-1, math.inf, "1", True):
        with pytest.raises(RetryConfigError) as info:
            RetryPolicy(c, lease=bad, logger=False)
        assert info.value.field == "lease"
    with pytest.raises(RetryConfigError) as info:
        RetryPolicy(c, retry_on=("ConnectionError",), logger=False)
    assert info.value.field == "retry_on" and info.value.value == "ConnectionError"
    with pytest.raises(RetryConfigError) as info:
        RetryPolicy(c, retry_on=42, logger=False)
    assert info.value.field == "retry_on"
    with pytest.raises(TypeError):
        RetryPolicy({"max_attempts": 3})


async def test_bad_idempotency_arguments():
    from ricochet import RetryPolicy

    async def op():
        return 1

    policy = RetryPolicy(PRESETS["default"], logger=False, metrics=False)
    for key in ("", None, 7):
        with pytest.raises(RetryConfigError) as info:
            await policy.execute_idempotent(key, op, "svc", "op")
        assert info.value.field == "key"
    with pytest.raises(RetryConfigError) as info:
        await policy.execute_idempotent("k", op, "svc", "op", fingerprint=b"bytes")
    assert info.value.field == "fingerprint"


def test_json_policy_file(tmp_path):
    p = tmp_path / "p.json"
    p.write_text('{"retry_policies": {"api": {"extends": "conservative", "max_attempts": 4}}}')
    assert load_policies(p)["api"].max_attempts == 4
    assert load_policies(p)["api"].slot_count == 5
    p.write_text('{"retry_policies": {"api": {"max_attempts": "four"}}}')
    with pytest.raises(PolicyFileError) as info:
        load_policies(p)
    assert "invalid type: string \"four\"" in str(info.value)  # the Rust parser's own message
    with pytest.raises(PolicyFileError, match="cannot read"):
        load_policies(tmp_path / "missing.yaml")
