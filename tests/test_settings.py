"""Settings: precedence, secrets, SASL/SSL pass-through into client configs, profiles."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from producers.kafka import BrokerUnreachable, check_reachable, make_consumer, make_producer
from schemas.settings import PROFILES, ConfigFileError, Settings, load_settings

SECRET = "hunter2-Zq9"
KEY_SECRET = "keypass-Xv7"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Only what a test sets: no STREAMRISK_* leaking in from the shell or CI."""
    import os

    for name in list(os.environ):
        if name.startswith("STREAMRISK_"):
            monkeypatch.delenv(name)
    yield monkeypatch


FILES = {
    "toml": ('client_id = "from-file"\nconnect_timeout_s = 3\ntopic_prefix = "file."\n'
             '[worker]\ncommit_interval_ms = 100\nbatch_size = 50\n'
             '[security]\nsasl_username = "file-user"\n'),
    "yaml": ("client_id: from-file\nconnect_timeout_s: 3\ntopic_prefix: file.\n"
             "worker:\n  commit_interval_ms: 100\n  batch_size: 50\n"
             "security:\n  sasl_username: file-user\n"),
}


def test_defaults() -> None:
    s = load_settings()
    assert (s.profile, s.bootstrap_servers, s.topic_prefix) == ("embedded", None, "streamrisk.")
    assert s.connect_timeout_s == 10 and s.worker.guarantee == "exactly-once"
    assert s.topic("market") == "streamrisk.market"


@pytest.mark.parametrize("kind", sorted(FILES))
def test_precedence_defaults_file_env_flags(tmp_path: Path, clean_env: pytest.MonkeyPatch,
                                            kind: str) -> None:
    path = tmp_path / f"streamrisk.{kind}"
    path.write_text(FILES[kind])
    s = load_settings(path)
    assert (s.client_id, s.connect_timeout_s, s.topic_prefix) == ("from-file", 3, "file.")
    assert (s.worker.commit_interval_ms, s.worker.batch_size) == (100, 50)
    assert s.profile == "embedded"  # untouched default

    clean_env.setenv("STREAMRISK_CONNECT_TIMEOUT_S", "4")
    clean_env.setenv("STREAMRISK_WORKER__BATCH_SIZE", "7")
    clean_env.setenv("STREAMRISK_SECURITY__SASL_MECHANISM", "PLAIN")
    s = load_settings(path)
    assert (s.client_id, s.connect_timeout_s) == ("from-file", 4)
    # Nested sections merge key by key: the file's values survive next to the environment's.
    assert (s.worker.commit_interval_ms, s.worker.batch_size) == (100, 7)
    assert (s.security.sasl_username, s.security.sasl_mechanism) == ("file-user", "PLAIN")

    s = load_settings(path, topic_prefix="flag.", connect_timeout_s=5, profile=None)
    assert (s.topic_prefix, s.connect_timeout_s, s.client_id) == ("flag.", 5, "from-file")
    assert s.profile == "embedded"  # a None flag (option not given) changes nothing


@pytest.mark.parametrize(("text", "suffix", "fragment"), [
    ("connect_timeout_s = -1\n", ".toml", "connect_timeout_s: Input should be greater than 0"),
    ('profile = "fast"\n', ".toml", "profile: Input should be 'test', 'embedded' or"),
    ("no_such_setting = 1\n", ".toml", "no_such_setting: Extra inputs are not permitted"),
    ("worker:\n  guarantee: maybe\n", ".yaml", "worker.guarantee: Input should be"),
    ("profile = \n", ".toml", "is not valid YAML/TOML: Invalid value"),
    ("- a\n- b\n", ".yaml", "must hold a table"),
    ("a: [1,\n", ".yml", "is not valid YAML/TOML: "),
])
def test_bad_config_files_give_one_line(tmp_path: Path, text: str, suffix: str,
                                        fragment: str) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigFileError) as info:
        load_settings(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and fragment in message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"cannot read config file .*missing.toml"):
        load_settings(tmp_path / "missing.toml")


def test_bad_environment_is_blamed_on_the_environment(tmp_path: Path,
                                                      clean_env: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ok.toml"
    path.write_text('profile = "test"\n')
    clean_env.setenv("STREAMRISK_CONNECT_TIMEOUT_S", "soon")
    with pytest.raises(ConfigFileError, match=r"^environment \(STREAMRISK_\*\): "
                                              r"connect_timeout_s: "):
        load_settings(path)


def test_urgent_topics_default_to_what_a_desk_acts_on_and_must_be_outputs(
        tmp_path: Path) -> None:
    assert Settings().worker.urgent_topics == ["risk.alerts", "risk.breaches",
                                               "risk.decisions", "risk.states"]
    path = tmp_path / "urgent.toml"
    path.write_text('[worker]\nurgent_topics = ["risk.alerts", "market", "risk.control"]\n')
    with pytest.raises(ConfigFileError) as info:
        load_settings(path)
    message = str(info.value)
    assert "\n" not in message
    assert "not output topics: market, risk.control" in message
    path.write_text("[worker]\nurgent_topics = []\n")
    assert load_settings(path).worker.urgent_topics == []


def test_snapshot_budget_is_a_share_of_the_worker_time(tmp_path: Path) -> None:
    assert Settings().worker.snapshot_budget == 0.1
    path = tmp_path / "budget.toml"
    for bad in ("0", "1.5"):
        path.write_text(f"[worker]\nsnapshot_budget = {bad}\n")
        with pytest.raises(ConfigFileError, match=r"worker\.snapshot_budget") as info:
            load_settings(path)
        assert "\n" not in str(info.value)
    path.write_text("[worker]\nsnapshot_budget = 1\n")
    assert load_settings(path).worker.snapshot_budget == 1.0


# --- secrets -------------------------------------------------------------------------------


def _secret_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    path = tmp_path / "s.toml"
    path.write_text(f'[security]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = '
                    f'"SCRAM-SHA-512"\nsasl_username = "svc"\nssl_key_password = '
                    f'"{KEY_SECRET}"\n')
    monkeypatch.setenv("STREAMRISK_SECURITY__SASL_PASSWORD", SECRET)
    monkeypatch.setenv("STREAMRISK_SNAPSHOT_KEY", "snapkey-Qw3")
    return load_settings(path, bootstrap_servers="127.0.0.1:1")


def test_secrets_never_in_repr_str_or_dump(tmp_path: Path,
                                           clean_env: pytest.MonkeyPatch) -> None:
    s = _secret_settings(tmp_path, clean_env)
    for text in (repr(s), str(s), s.model_dump_json(), repr(s.security), str(s.model_dump())):
        assert SECRET not in text and KEY_SECRET not in text and "snapkey-Qw3" not in text
    # ...yet they reach the client and the snapshot signer.
    assert s.producer_config()["sasl.password"] == SECRET
    assert s.consumer_config("g")["ssl.key.password"] == KEY_SECRET
    assert s.snapshot_key_bytes() == b"snapkey-Qw3"


@pytest.mark.parametrize("text", [
    f'[security]\nsasl_password = "{SECRET}"\nsasl_username = 5\n',  # bad value next to it
    f'[security]\nsasl_password = "{SECRET}\n',  # unterminated string holding the secret
    '[security]\nsasl_password = 2407\n',  # the secret itself has the wrong type
])
def test_secrets_never_in_config_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ConfigFileError) as info:
        load_settings(path)
    assert SECRET not in str(info.value) and "2407" not in str(info.value)


def test_secrets_never_in_unreachable_broker_error(tmp_path: Path,
                                                   clean_env: pytest.MonkeyPatch) -> None:
    s = _secret_settings(tmp_path, clean_env)
    s = s.model_copy(update={"security": s.security.model_copy(
        update={"security_protocol": "SASL_PLAINTEXT"})})
    with pytest.raises(BrokerUnreachable) as info:
        check_reachable(s, timeout_s=1)
    assert "127.0.0.1:1" in str(info.value) and SECRET not in str(info.value)


# --- client configs -------------------------------------------------------------------------


def test_sasl_and_ssl_pass_through(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(SECRET + "\n")
    s = load_settings(None, bootstrap_servers="k1:9093,k2:9093", security={
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_username": "svc", "sasl_password_file": str(tmp_path / "pw"),
        "ssl_ca_location": "/etc/ca.pem", "ssl_certificate_location": "/etc/cert.pem",
        "ssl_key_location": "/etc/key.pem", "ssl_key_password": KEY_SECRET,
        "ssl_endpoint_identification_algorithm": "none"},
        kafka_overrides={"socket.keepalive.enable": "true"})
    expected = {"bootstrap.servers": "k1:9093,k2:9093", "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "svc",
                "sasl.password": SECRET, "ssl.ca.location": "/etc/ca.pem",
                "ssl.certificate.location": "/etc/cert.pem",
                "ssl.key.location": "/etc/key.pem", "ssl.key.password": KEY_SECRET,
                "ssl.endpoint.identification.algorithm": "none",
                "socket.keepalive.enable": "true"}
    for conf in (s.admin_config(), s.producer_config("tx-1"), s.consumer_config("g")):
        assert expected.items() <= conf.items()
    assert s.producer_config("tx-1")["transactional.id"] == "tx-1"
    assert s.consumer_config("g", instance_id="w-1")["group.instance.id"] == "w-1"


def test_librdkafka_accepts_the_built_configs() -> None:
    # Real clients, no broker needed to construct them: every key must be a librdkafka one.
    s = load_settings(None, bootstrap_servers="127.0.0.1:1", security={
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
        "sasl_username": "svc", "sasl_password": SECRET})
    make_producer(s, transactional_id="tx-check")
    make_consumer(s, "group-check", instance_id="member-1").close()


def test_no_bootstrap_is_a_readable_error() -> None:
    with pytest.raises(ValueError, match="no bootstrap servers configured"):
        load_settings().producer_config()


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profiles(profile: str) -> None:
    conf = load_settings(None, bootstrap_servers="h:1", profile=profile).consumer_config("g")
    # Sub-6 s session timeouts would make real clusters flap: never outside the test profile,
    # which has the shortest timeouts of all.
    assert conf["session.timeout.ms"] >= 6000 or profile == "test"
    assert PROFILES["test"].session_timeout_ms <= PROFILES[profile].session_timeout_ms
    assert conf["heartbeat.interval.ms"] * 3 <= conf["session.timeout.ms"]
    # The embedded broker never completes cooperative-sticky assignment.
    expected = "cooperative-sticky" if profile == "production" else "range"
    assert conf["partition.assignment.strategy"] == expected
    assert conf["isolation.level"] == "read_committed"
    assert conf["enable.auto.commit"] is False
