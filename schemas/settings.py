"""Settings in one place: defaults < config file < environment (STREAMRISK_*) < CLI flags.

Profiles differ only in bootstrap, security, timeouts, assignor and fetch wait (DESIGN.md
section 6). The builders here turn settings into plain librdkafka config dicts; the one
place that constructs Kafka clients (`producers.kafka`) feeds them to confluent-kafka.
Secrets (SASL password, TLS key password, snapshot key) are `SecretStr`: never printed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.codec import DEFAULT_MAX_MESSAGE_BYTES
from schemas.topics import CATALOGUE, DEFAULT_PREFIX

Profile = Literal["test", "embedded", "production"]
Guarantee = Literal["exactly-once", "at-least-once"]


class ConfigFileError(ValueError):
    """A config file that cannot be read or does not validate; the message is one line."""


class ProfileDefaults(BaseModel):
    model_config = ConfigDict(frozen=True)
    session_timeout_ms: int
    heartbeat_interval_ms: int
    max_poll_interval_ms: int
    assignor: str
    fetch_wait_max_ms: int
    lower_fetcher_priority: bool = False
    """Run librdkafka's broker threads at a lower priority (see
    `producers.kafka.lower_fetcher_priority`): for brokers that answer empty fetches at once
    instead of holding them for fetch.wait.max.ms, as the embedded one does."""
    idle_probe_ms: int | None = None
    """Pause what a worker has read to its end (side tables, input partitions) and look for
    more every this many ms (`producers.kafka.IdlePause`); None: keep fetching, for brokers
    that hold empty fetches."""
    socket_timeout_ms: int
    transaction_timeout_ms: int
    message_timeout_ms: int


URGENT_TOPICS = ("risk.alerts", "risk.breaches", "risk.decisions", "risk.states")
"""What a desk acts on: committed as soon as produced (`WorkerSettings.urgent_topics`)."""
OUTPUT_TOPICS = frozenset(spec.name for spec in CATALOGUE
                          if spec.name.startswith("risk.") or spec.name == "dlq"
                          ) - {"risk.limits", "risk.control"}
"""What workers publish (limits and commands come from `streamrisk limits`, `kill`...)."""

TRANSACTIONAL_LINGER_MS = 100
"""linger.ms of transactional producers (see `Settings.producer_config`)."""

# session.timeout.ms below 6000 belongs to the test profile only (DESIGN.md section 6).
# noida-db never completes cooperative-sticky assignment, so embedded and test use range.
PROFILES: dict[str, ProfileDefaults] = {
    # noida-db rejects JoinGroup with session.timeout.ms below 6000 (INVALID_SESSION_TIMEOUT).
    "test": ProfileDefaults(session_timeout_ms=6000, heartbeat_interval_ms=500,
                            max_poll_interval_ms=30000, assignor="range", fetch_wait_max_ms=10,
                            lower_fetcher_priority=True, idle_probe_ms=10, socket_timeout_ms=5000,
                            transaction_timeout_ms=10000, message_timeout_ms=10000),
    "embedded": ProfileDefaults(session_timeout_ms=6000, heartbeat_interval_ms=1000,
                                max_poll_interval_ms=60000, assignor="range",
                                fetch_wait_max_ms=20, lower_fetcher_priority=True,
                                idle_probe_ms=10, socket_timeout_ms=10000,
                                transaction_timeout_ms=30000, message_timeout_ms=30000),
    "production": ProfileDefaults(session_timeout_ms=45000, heartbeat_interval_ms=3000,
                                  max_poll_interval_ms=300000, assignor="cooperative-sticky",
                                  fetch_wait_max_ms=100, socket_timeout_ms=30000,
                                  transaction_timeout_ms=60000, message_timeout_ms=120000),
}


class KafkaSecurity(BaseModel):
    """Passed through to confluent-kafka; secrets only from the environment or files."""

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_endpoint_identification_algorithm: Literal["https", "none"] = "https"

    def librdkafka(self) -> dict[str, str]:
        conf: dict[str, str] = {"security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        password = self.sasl_password.get_secret_value() if self.sasl_password else None
        if password is None and self.sasl_password_file:
            password = self.sasl_password_file.read_text().strip()
        if password is not None:
            conf["sasl.password"] = password
        for name in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location"):
            value = getattr(self, name)
            if value is not None:
                conf[name.replace("_", ".")] = str(value)
        if self.ssl_key_password:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        if self.security_protocol in ("SSL", "SASL_SSL"):
            algo = self.ssl_endpoint_identification_algorithm
            conf["ssl.endpoint.identification.algorithm"] = algo
        return conf


class WorkerSettings(BaseModel):
    guarantee: Guarantee = "exactly-once"
    commit_interval_ms: int = Field(default=500, ge=10, le=600_000)
    commit_interval_events: int = Field(default=5000, ge=1)
    snapshot_interval_ms: int = Field(
        default=1000, ge=0, le=3_600_000,
        description="a partition's changed keys are snapshotted at a checkpoint this long "
                    "after its previous snapshot, not at every one (partitions staggered); "
                    "a restore replays the input since (outputs dropped) up to the "
                    "committed offset. 0: at every checkpoint. Workers with side tables "
                    "always snapshot every checkpoint")
    snapshot_budget: float = Field(
        default=0.1, gt=0, le=1,
        description="share of the worker's time snapshot rounds may take: a partition whose "
                    "round cost more than its share waits longer than snapshot_interval_ms "
                    "for the next")
    batch_size: int = Field(default=500, ge=1, le=100_000)
    dedup_per_key: int = Field(default=256, ge=0, le=65_536,
                               description="event_ids remembered per state key (0: no dedup)")
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    out_of_range_policy: Literal["earliest", "latest", "fail"] = "earliest"
    table_max_wait_ms: int = Field(
        default=5000, ge=0, le=3_600_000,
        description="longest an input event (an order) is held for its side table "
                    "(instrument risk) to catch up in event time; 0: never hold")
    table_idle_ms: int = Field(
        default=2000, ge=1, le=3_600_000,
        description="nothing arrived for this long, and every table read to its end: "
                    "held events are released (end of a replay)")
    urgent_topics: list[str] = Field(
        default_factory=lambda: list(URGENT_TOPICS),
        description="exactly-once: an input partition that produced a message to one of "
                    "these topics is committed at the end of that batch, not at the next "
                    "commit_interval_ms, unless the worker is behind (a full batch). "
                    "[]: every output waits for the interval")

    @field_validator("urgent_topics")
    @classmethod
    def _known_outputs(cls, topics: list[str]) -> list[str]:
        unknown = [t for t in topics if t not in OUTPUT_TOPICS]
        if unknown:
            raise ValueError(f"not output topics: {', '.join(unknown)} "
                             f"(choose from {', '.join(sorted(OUTPUT_TOPICS))})")
        return topics


class Settings(BaseSettings):
    """All of streamrisk's configuration. Environment: STREAMRISK_<NAME>, nested with '__'
    (e.g. STREAMRISK_SECURITY__SASL_USERNAME)."""

    model_config = SettingsConfigDict(env_prefix="STREAMRISK_", env_nested_delimiter="__",
                                      extra="forbid", validate_default=True)

    profile: Profile = "embedded"
    bootstrap_servers: str | None = None
    topic_prefix: str = Field(default=DEFAULT_PREFIX, pattern=r"^[A-Za-z0-9._\-]*$")
    client_id: str = "streamrisk"
    security: KafkaSecurity = Field(default_factory=KafkaSecurity)
    kafka_overrides: dict[str, str] = Field(
        default_factory=dict, description="Extra librdkafka properties, passed through as is.")
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, ge=1024, le=100_000_000)
    snapshot_key: SecretStr | None = None
    snapshot_key_file: Path | None = None
    connect_timeout_s: float = Field(default=10.0, gt=0, le=120)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    fail_closed_on_missing_reference: bool = True
    market: dict[str, Any] = Field(
        default_factory=dict, description="market worker models and alerts "
        "(engine.market_config.MarketRiskConfig), validated by the worker")
    orders: dict[str, Any] = Field(
        default_factory=dict, description="order worker gate, limits and state machine "
        "(engine.order_config.OrderConfig), validated by the worker")
    scopes: dict[str, Any] = Field(
        default_factory=dict, description="desk/firm stage (engine.scope_risk.ScopeConfig), "
        "validated by the worker")

    @property
    def profile_defaults(self) -> ProfileDefaults:
        return PROFILES[self.profile]

    def topic(self, short_name: str) -> str:
        """Full topic name for a catalogue name."""
        return self.topic_prefix + short_name

    def snapshot_key_bytes(self) -> bytes:
        """The HMAC key for state snapshots. Without one configured, a fixed development key
        is used and snapshots are only as trustworthy as the changelog's ACLs."""
        if self.snapshot_key is not None:
            return self.snapshot_key.get_secret_value().encode()
        if self.snapshot_key_file is not None:
            return self.snapshot_key_file.read_bytes().strip()
        return b"streamrisk-development-snapshot-key"

    # --- librdkafka config builders -------------------------------------------------------

    def common_config(self) -> dict[str, Any]:
        if not self.bootstrap_servers:
            raise ValueError("no bootstrap servers configured")
        p = self.profile_defaults
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "socket.timeout.ms": p.socket_timeout_ms,
            "message.max.bytes": max(self.max_message_bytes + 4096, 1_000_000),
        }
        conf.update(self.security.librdkafka())
        conf.update(self.kafka_overrides)
        return conf

    def admin_config(self) -> dict[str, Any]:
        return self.common_config()

    def producer_config(self, transactional_id: str | None = None) -> dict[str, Any]:
        p = self.profile_defaults
        conf = self.common_config()
        conf.update({
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.timeout.ms": p.message_timeout_ms,
        })
        if transactional_id:
            conf["transactional.id"] = transactional_id
            conf["transaction.timeout.ms"] = p.transaction_timeout_ms
            # Read-committed readers see nothing before the commit, and commit_transaction
            # sends whatever is lingering at once: a longer linger delays no one, and a
            # worker's eight partition producers send a few large requests per checkpoint
            # instead of one small one every 5 ms each (Kafka Streams uses 100 ms too).
            conf["linger.ms"] = TRANSACTIONAL_LINGER_MS
        conf.update(self.kafka_overrides)
        return conf

    def consumer_config(self, group_id: str | None, *, read_committed: bool = True,
                        instance_id: str | None = None) -> dict[str, Any]:
        p = self.profile_defaults
        conf = self.common_config()
        conf.update({
            "group.id": group_id or f"{self.client_id}-reader",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": self.worker.out_of_range_policy
            if self.worker.out_of_range_policy != "fail" else "error",
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
            "session.timeout.ms": p.session_timeout_ms,
            "heartbeat.interval.ms": p.heartbeat_interval_ms,
            "max.poll.interval.ms": p.max_poll_interval_ms,
            "partition.assignment.strategy": p.assignor,
            "fetch.wait.max.ms": p.fetch_wait_max_ms,
            "fetch.message.max.bytes": max(self.max_message_bytes + 4096, 1_048_576),
        })
        if instance_id:
            conf["group.instance.id"] = instance_id
        conf.update(self.kafka_overrides)
        return conf


def read_mapping_file(path: str | Path, what: str,
                      error: type[ValueError] = ValueError) -> dict[str, Any]:
    """A YAML (.yaml/.yml) or TOML file holding a table, as a dict. Any problem raises
    `error` with one line naming `what` the file is ("config file", "limits file")."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except Exception as exc:  # noqa: BLE001 - yaml and tomllib raise their own types
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise error(f"{what} {path} is not valid YAML/TOML: {first}") from None
    if not isinstance(data, dict):
        raise error(f"{what} {path} must hold a table")
    return data


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or YAML config file into a dict; ConfigFileError on any problem."""
    return read_mapping_file(path, "config file", ConfigFileError)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from defaults, then the config file, then the environment, then `overrides`
    (CLI flags; None values are ignored). Raises ConfigFileError with one readable line."""
    file_values = load_config_file(config_file) if config_file else {}
    flags = {k: v for k, v in overrides.items() if v is not None}
    # The environment is validated on its own so an error names the source that caused it.
    source = "environment (STREAMRISK_*)"
    try:
        from_env = Settings()
        merged = _deep_merge(file_values, from_env.model_dump(exclude_unset=True))
        source = f"config file {config_file}" if config_file else "settings"
        return Settings.model_validate(_deep_merge(merged, flags))
    except ValidationError as exc:
        item = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in item["loc"]) or "settings"
        raise ConfigFileError(f"{source}: {where}: {item['msg']}") from None


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
