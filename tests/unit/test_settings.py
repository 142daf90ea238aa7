"""Settings: defaults, the environment, then flags; conversion and validation errors."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Optional

import pytest

from wirthforge_ws import settings as settings_module
from wirthforge_ws.settings import Settings


def test_settings_defaults() -> None:
    loaded = settings_module.load([], environ={})
    assert loaded == Settings()
    assert loaded.frame_rate == 60.0 and loaded.port == 8145 and loaded.host == "127.0.0.1"
    assert "http://127.0.0.1:8145" in loaded.own_origins and "http://localhost:8145" in loaded.own_origins


def test_settings_env_then_cli() -> None:
    env = {"WF_FRAME_RATE": "30", "WF_PORT": "9000", "WF_SEND_TIMEOUT": "1.5", "WF_TIER": "High-Tier"}
    from_env = settings_module.load([], environ=env)
    assert (from_env.frame_rate, from_env.port, from_env.send_timeout, from_env.tier) == (30.0, 9000, 1.5, "High-Tier")
    # Flags win over the environment; what no flag sets keeps the environment's value.
    both = settings_module.load(["--frame-rate", "50", "--send-queue-limit", "7"], environ=env)
    assert (both.frame_rate, both.send_queue_limit, both.port) == (50.0, 7, 9000)
    assert isinstance(both.frame_rate, float) and isinstance(both.send_queue_limit, int)


def test_settings_tuples() -> None:
    env = {"WF_ALLOWED_ORIGINS": " https://a.example , https://b.example,,", "WF_ALLOWED_HOSTS": ""}
    loaded = settings_module.load([], environ=env)
    assert loaded.allowed_origins == ("https://a.example", "https://b.example")
    assert loaded.allowed_hosts == ()
    # Repeated flags, each possibly comma-separated; they replace the environment's list.
    loaded = settings_module.load(
        ["--allowed-origins", "https://c.example", "--allowed-origins", "https://d.example,https://e.example"],
        environ=env,
    )
    assert loaded.allowed_origins == ("https://c.example", "https://d.example", "https://e.example")


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        (" on ", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
        ("", False),
    ],
)
def test_settings_bool_from_env(raw: str, value: bool) -> None:
    assert settings_module.load([], environ={"WF_ALLOW_NULL_ORIGIN": raw}).allow_null_origin is value


def test_settings_bool_flags() -> None:
    env = {"WF_ENABLE_PUBLISH": "1"}
    assert settings_module.load([], environ=env).enable_publish is True
    assert settings_module.load(["--no-enable-publish"], environ=env).enable_publish is False
    assert settings_module.load(["--enable-publish"], environ={}).enable_publish is True


def test_settings_optional_int() -> None:
    assert settings_module.load([], environ={"WF_SEED": "42"}).seed == 42
    assert settings_module.load([], environ={"WF_SEED": "none"}).seed is None
    assert settings_module.load(["--seed", "7"], environ={"WF_SEED": "42"}).seed == 7


INVALID_ENV = [
    ({"WF_ALLOW_NULL_ORIGIN": "maybe"}, "allow_null_origin"),
    ({"WF_FRAME_RATE": "fast"}, "frame_rate"),
    ({"WF_PORT": "80.5"}, "port"),
    ({"WF_SEED": "random"}, "seed"),
    ({"WF_FRAME_RATE": "0"}, "frame_rate"),
    ({"WF_FRAME_RATE": "-60"}, "frame_rate"),
    ({"WF_HEARTBEAT_INTERVAL": "0"}, "heartbeat_interval"),
    ({"WF_SEND_QUEUE_LIMIT": "0"}, "limit"),
    ({"WF_MAX_MESSAGE_BYTES": "0"}, "limit"),
    ({"WF_TIER": "Huge-Tier"}, "tier"),
]


@pytest.mark.parametrize(
    ("env", "named"), INVALID_ENV, ids=[next(iter(env)) + "=" + next(iter(env.values())) for env, _ in INVALID_ENV]
)
def test_settings_invalid_env_raises(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        settings_module.from_env(env)


@pytest.mark.parametrize(("env", "named"), INVALID_ENV[:3], ids=["bool", "float", "int"])
def test_settings_invalid_env_is_a_usage_error(
    env: dict[str, str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Loading for the command line turns a bad value into a usage error that names the setting."""
    with pytest.raises(SystemExit) as exited:
        settings_module.load([], environ=env)
    assert exited.value.code == 2
    assert named in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--port", "http"], "port"),
        (["--frame-rate", "0"], "frame_rate"),
        (["--tier", "Top"], "tier"),
        (["--enable-publish", "yes"], "unrecognized"),
    ],
)
def test_settings_invalid_flag_is_a_usage_error(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        settings_module.load(argv, environ={})
    assert exited.value.code == 2
    assert named in capsys.readouterr().err


def test_settings_unknown_flag_exits() -> None:
    with pytest.raises(SystemExit):
        settings_module.load(["--no-such-setting", "1"], environ={})


def test_settings_own_origins_follow_host_and_port() -> None:
    assert Settings(port=9001).own_origins == ("http://127.0.0.1:9001", "http://[::1]:9001", "http://localhost:9001")
    assert "http://wf.lan:9001" in Settings(host="wf.lan", port=9001).own_origins


def _as_text(value: object) -> str:
    """A setting's value written the way a user writes it in the environment."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def test_every_setting_reads_back_its_own_value_from_the_environment() -> None:
    """Each field converts by its declared type: a changed value written as text comes back equal and of that type."""
    changed = Settings(
        port=9001,
        frame_rate=30.0,
        direct_writes=False,
        allowed_origins=("https://a.example", "https://b.example"),
        seed=11,
        persist_max_age_hours=1.5,
    )
    environ = {
        settings_module.ENV_PREFIX + f.name.upper(): _as_text(getattr(changed, f.name))
        for f in dataclasses.fields(Settings)
    }
    loaded = settings_module.from_env(environ)
    assert loaded == changed
    for f in dataclasses.fields(Settings):
        assert type(getattr(loaded, f.name)) is type(getattr(changed, f.name)), f.name


@pytest.mark.parametrize(
    ("hint", "raw", "value"),
    [
        (int, "42", 42),
        (float, "1e3", 1000.0),
        (bool, "on", True),
        (str, " kept as is ", " kept as is "),
        (tuple[str, ...], "a, b,,c", ("a", "b", "c")),
        (int | None, "None", None),
        (int | None, "", None),
        (Optional[int], "7", 7),  # noqa: UP045 - the typing spelling must convert the same
        (float | None, "2.5", 2.5),
    ],
)
def test_conversion_follows_the_type_not_its_spelling(hint: Any, raw: str, value: object) -> None:
    assert settings_module._parser_for(hint)(raw) == value


@pytest.mark.parametrize("hint", [list[str], dict[str, int], tuple[int, ...], int | str, bytes])
def test_a_field_type_without_a_conversion_is_a_programming_error(hint: Any) -> None:
    with pytest.raises(TypeError, match="no conversion"):
        settings_module._parser_for(hint)


def test_an_int_setting_refuses_a_float_and_an_optional_int_keeps_its_name_in_the_error() -> None:
    with pytest.raises(ValueError, match="port"):
        settings_module.from_env({"WF_PORT": "1e3"})
    assert settings_module.load(["--seed", "none"], environ={"WF_SEED": "3"}).seed is None


def test_flags_follow_the_field_types() -> None:
    """Booleans get a --no- form, tuples repeat, everything else takes one value."""
    parser = settings_module.build_arg_parser()
    actions = {action.dest: action for action in parser._actions}
    for f in dataclasses.fields(Settings):
        kind = settings_module.FIELD_TYPES[f.name]
        action = actions[f.name]
        if kind is bool:
            assert "--no-" + f.name.replace("_", "-") in action.option_strings, f.name
        elif typing.get_origin(kind) is tuple:
            assert isinstance(action, argparse._AppendAction), f.name
        else:
            assert action.nargs is None and isinstance(action, argparse._StoreAction), f.name
