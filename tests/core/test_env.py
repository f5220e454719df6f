"""Numbers and ports from the environment: one parser each, one message shape, the caller's class."""

from __future__ import annotations

import pytest

from zr4.core.env import EnvError, env_float, env_int, env_port, port_number


class OwnError(Exception):
    pass


def test_env_int_default_value_minimum_and_message() -> None:
    assert env_int("N", 7, {}) == 7
    assert env_int("N", 7, {"N": "  "}) == 7  # empty is unset
    assert env_int("N", 7, {"N": " 12 "}) == 12
    with pytest.raises(EnvError, match=r"^N='x' is not a whole number$"):
        env_int("N", 7, {"N": "x"})
    with pytest.raises(EnvError, match=r"^N='1.5' is not a whole number$"):
        env_int("N", 7, {"N": "1.5"})
    with pytest.raises(OwnError, match=r"^N='4' must be at least 5$"):
        env_int("N", 7, {"N": "4"}, minimum=5, error=OwnError)
    assert env_int("N", 7, {"N": "-3"}) == -3  # no minimum given: any whole number


def test_env_float_rejects_negatives_and_zero_when_asked() -> None:
    assert env_float("S", 1.5, {}) == 1.5
    assert env_float("S", 1.5, {"S": "0"}) == 0.0
    assert env_float("S", 1.5, {"S": "2.25"}) == 2.25
    with pytest.raises(EnvError, match=r"^S='soon' is not a number$"):
        env_float("S", 1.5, {"S": "soon"})
    with pytest.raises(OwnError, match=r"^S='-1' must not be negative$"):
        env_float("S", 1.5, {"S": "-1"}, error=OwnError)
    with pytest.raises(EnvError, match=r"^S='0' must be more than 0$"):
        env_float("S", 1.5, {"S": "0"}, zero_ok=False)
    with pytest.raises(EnvError, match=r"^S='nan' must not be negative$"):
        env_float("S", 1.5, {"S": "nan"})  # NaN compares false to everything: never a setting


@pytest.mark.parametrize("raw", ["http", "0", "65536", "-1", "+8188", "8_188", "８１８８", "1e3"])
def test_a_port_is_ascii_digits_from_1_to_65535(raw: str) -> None:
    with pytest.raises(OwnError) as caught:
        env_port("P", 8188, {"P": raw}, error=OwnError)
    assert str(caught.value) == f"P={raw!r} is not a port number"


def test_env_port_default_and_value_and_port_number_names_the_setting() -> None:
    assert env_port("P", 8188, {}) == 8188
    assert env_port("P", 8188, {"P": ""}) == 8188
    assert env_port("P", 8188, {"P": " 9000 "}) == 9000
    assert env_port("P", 8188, {"P": "65535"}) == 65535
    assert port_number("18188", "ROUTES backend") == 18188
    with pytest.raises(EnvError, match=r"^ROUTES backend='x' is not a port number$"):
        port_number("x", "ROUTES backend")
