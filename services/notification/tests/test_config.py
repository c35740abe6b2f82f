"""config.py: the environment, with the Rust services' names and defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from bookmesh_notification.config import DEFAULT_POLICY, Config, ConfigError, mask_url_password, parse_duration


def test_defaults_match_the_mesh():
    config = Config.from_env({})
    assert config.listen == ("0.0.0.0", 50055)
    assert config.admin_listen is None
    assert config.sqlite_path == Path("data/notification.db")
    assert config.store == "sqlite" and config.event_transport == "feed"
    assert config.redis_prefix == "bookmesh:notification:"
    assert config.rental_endpoints == ("127.0.0.1:50053",)
    assert config.certificate == Path("data/pki/notification.crt")
    assert config.private_key == Path("data/pki/notification.key")
    assert config.authorities == Path("data/pki/ca.crt")
    assert config.token_key_file == Path("data/pki/jwt.pub")
    assert (config.token_issuer, config.token_audience) == ("bookmesh-dev", "bookmesh")
    assert config.authz_policy == DEFAULT_POLICY and DEFAULT_POLICY.exists()
    assert config.max_message_bytes == 1024 * 1024 and config.request_timeout == 10.0
    assert not config.insecure_plaintext


def test_the_launchers_environment_is_understood():
    config = Config.from_env(
        {
            "BOOKMESH_LISTEN": "127.0.0.1:50055",
            "BOOKMESH_ADMIN_LISTEN": "127.0.0.1:51055",
            "BOOKMESH_DATA_DIR": "/tmp/mesh",
            "BOOKMESH_LOG_FORMAT": "pretty",
            "BOOKMESH_PKI_DIR": "/repo/data/pki",
            "BOOKMESH_INSECURE_PLAINTEXT": "false",
            "BOOKMESH_FAULTS_ENABLED": "true",
            "BOOKMESH_RENTAL_ENDPOINTS": "http://127.0.0.1:50053, http://10.0.0.2:50053",
            "BOOKMESH_EVENT_TRANSPORT": "grpc",
            "BOOKMESH_REMINDER_INTERVAL": "250ms",
            "BOOKMESH_INBOX_RETENTION": "7d",
        }
    )
    assert config.admin_listen == ("127.0.0.1", 51055)
    assert config.sqlite_path == Path("/tmp/mesh/notification.db")
    assert config.certificate == Path("/repo/data/pki/notification.crt")
    assert config.rental_endpoints == ("127.0.0.1:50053", "10.0.0.2:50053")
    assert config.event_transport == "feed", "grpc is the feed's other name"
    assert config.reminder_interval == 0.25 and config.inbox_retention == 7 * 86400


def test_every_bad_variable_is_named():
    with pytest.raises(ConfigError) as raised:
        Config.from_env(
            {"BOOKMESH_LISTEN": "nowhere", "BOOKMESH_NOTIFICATION_STORE": "mongo", "BOOKMESH_REQUEST_TIMEOUT": "10"}
        )
    message = str(raised.value)
    for name in ("BOOKMESH_LISTEN", "BOOKMESH_NOTIFICATION_STORE", "BOOKMESH_REQUEST_TIMEOUT"):
        assert name in message


def test_durations_and_masked_urls():
    assert parse_duration("250ms") == 0.25
    assert parse_duration("2m") == 120
    with pytest.raises(ValueError):
        parse_duration("3w")
    assert mask_url_password("redis://app:secret@redis:6379/0") == "redis://app:****@redis:6379/0"
    assert mask_url_password("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
    described = Config.from_env({"BOOKMESH_REDIS_URL": "redis://u:hunter2@r/0"}).described()
    assert "hunter2" not in str(described)


def test_what_is_kept_is_bounded_and_configurable():
    config = Config.from_env({})
    assert config.notice_retention == 90 * 86400 and config.max_notices_per_member == 200
    config = Config.from_env({"BOOKMESH_NOTICE_RETENTION": "30d", "BOOKMESH_MAX_NOTICES_PER_MEMBER": "50"})
    assert (config.notice_retention, config.max_notices_per_member) == (30 * 86400, 50)
    with pytest.raises(ConfigError) as raised:
        Config.from_env({"BOOKMESH_MAX_NOTICES_PER_MEMBER": "0"})
    assert "BOOKMESH_MAX_NOTICES_PER_MEMBER" in str(raised.value)
    # A notice must outlive the inbox entry of its event: its id is what stops a replay then.
    with pytest.raises(ConfigError) as raised:
        Config.from_env({"BOOKMESH_NOTICE_RETENTION": "3d"})
    assert "BOOKMESH_NOTICE_RETENTION" in str(raised.value)
