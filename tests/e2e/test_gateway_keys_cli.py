"""`llmkit gateway keys|tenants` as operators run them: on the store itself and through a running gateway."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmkit.cli.main import app
from tests.serve_process import LLMKIT, ServerProcess

ADMIN_KEY = "test-admin-key-0123456789"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`llmkit ARGS` as a shell runs it (stdout and stderr apart, as `KEY=$(...)` sees them)."""
    return subprocess.run([LLMKIT, *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def store(tmp_path: Path) -> list[str]:
    return ["--store", f"sqlite:///{tmp_path}/p.db"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def test_keys_and_tenants_on_the_store(tmp_path: Path, store: list[str]) -> None:
    code, out, _ = invoke(
        "gateway", "tenants", "create", "--name", "Acme", "--id", "acme", "--rpm", "60", *store
    )
    assert code == 0, out
    assert "acme" in out and "60" in out

    done = run("gateway", "keys", "create", "--name", "ci", "--tenant", "acme", "--scope", "chat", *store)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("llk_") and "\n" not in key, "the key alone on stdout"
    assert "shown only now" in done.stderr
    key_id, secret = key[len("llk_") :].split("_", 1)

    code, out, _ = invoke("gateway", "keys", "list", *store)
    assert code == 0
    assert key_id in out and "ci" in out and "acme" in out and "active" in out
    assert secret not in out and key not in out
    code, out, _ = invoke("gateway", "keys", "list", "--json", *store)
    (listed,) = json.loads(out)["keys"]
    assert listed["id"] == key_id and listed["scopes"] == ["chat"]
    assert secret not in out
    code, out, _ = invoke("gateway", "keys", "list", "--tenant", "other", "--json", *store)
    assert json.loads(out)["keys"] == []

    # The store holds a hash: neither the key nor its secret is anywhere in the database's files.
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("p.db*"))
    assert key_id.encode() in stored
    assert secret.encode() not in stored and key.encode() not in stored

    code, out, _ = invoke("gateway", "keys", "revoke", key_id, *store)
    assert code == 0 and f"revoked API key {key_id}" in out
    code, out, _ = invoke("gateway", "keys", "list", "--json", *store)
    assert json.loads(out)["keys"][0]["status"] == "revoked"
    code, _, err = invoke("gateway", "keys", "revoke", "nosuchkey", *store)
    assert code == 1 and "no API key 'nosuchkey'" in err

    # PATCH semantics: only the quotas given change; none clears one.
    code, out, _ = invoke("gateway", "tenants", "set", "acme", "--tpm", "1000", "--json", *store)
    assert code == 0
    assert json.loads(out)["quotas"] == {
        "rpm": 60,
        "tpm": 1000,
        "max_concurrent": None,
        "daily_tokens": None,
        "monthly_tokens": None,
    }
    code, out, _ = invoke(
        "gateway", "tenants", "set", "acme", "--rpm", "none", "--name", "Acme Inc", "--json", *store
    )
    body = json.loads(out)
    assert body["name"] == "Acme Inc" and body["quotas"]["rpm"] is None and body["quotas"]["tpm"] == 1000
    code, out, _ = invoke("gateway", "tenants", "list", "--json", *store)
    assert [t["id"] for t in json.loads(out)["tenants"]] == ["acme"]
    code, out, _ = invoke("gateway", "tenants", "list", *store)
    assert code == 0 and "Acme Inc" in out
    code, _, err = invoke("gateway", "tenants", "set", "nobody", "--rpm", "5", *store)
    assert code == 1 and "no tenant 'nobody'" in err


def test_json_create_prints_the_apis_201_body(store: list[str]) -> None:
    code, out, _ = invoke(
        "gateway", "keys", "create", "--name", "x", "--scope", "search", "--scope", "chat", "--json", *store
    )
    assert code == 0
    body = json.loads(out)
    assert body["key"].startswith(f"llk_{body['id']}_")
    assert body["scopes"] == ["chat", "search"] and body["status"] == "active" and body["tenant_id"] is None
    code, out, _ = invoke(
        "gateway", "tenants", "create", "--name", "Beta", "--daily-tokens", "5000", "--json", *store
    )
    tenant = json.loads(out)
    assert tenant["id"].startswith("t_") and tenant["quotas"]["daily_tokens"] == 5000


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["keys", "create", "--name", "x", "--scope", "everything"], "scopes"),
        (["keys", "create", "--name", " "], "name"),
        (["keys", "create", "--name", "x", "--expires", "tomorrow"], "expires_at"),
        (["keys", "create", "--name", "x", "--expires", "2001-01-01T00:00:00Z"], "expires_at"),
        (["keys", "create", "--name", "x", "--tenant", "ghost"], "tenant_id"),
        (["tenants", "create", "--name", "x", "--id", "default"], "id"),
        (["tenants", "create", "--name", "x", "--rpm", "0"], "quotas"),
        (["tenants", "create", "--name", "x", "--tpm", "lots"], "--tpm"),
        (["tenants", "set", "acme"], "name"),
    ],
)
def test_bad_input_exits_2_naming_the_field(store: list[str], args: list[str], field: str) -> None:
    invoke("gateway", "tenants", "create", "--name", "Acme", "--id", "acme", *store)
    code, out, err = invoke("gateway", *args, *store)
    assert code == 2, out + err
    assert err.startswith(f"llmkit: {field}") or f"{field}:" in err, err


def test_a_taken_tenant_name_and_a_bad_store_exit_2(tmp_path: Path, store: list[str]) -> None:
    invoke("gateway", "tenants", "create", "--name", "Acme", *store)
    code, _, err = invoke("gateway", "tenants", "create", "--name", "Acme", *store)
    assert code == 2 and "name exists" in err
    code, _, err = invoke("gateway", "tenants", "list", "--store", "mysql://db/x")
    assert code == 2 and "unsupported database" in err
    code, _, err = invoke("gateway", "keys", "list", "--url", "http://127.0.0.1:1", *store)
    assert code == 2 and "not both" in err
    code, _, err = invoke("gateway", "keys", "list", "--url", "http://127.0.0.1:1")
    assert code == 2 and "admin key" in err


def test_the_gateway_still_serves_and_lists_its_subcommands() -> None:
    code, out, _ = invoke("gateway", "--help")
    assert code == 0 and "keys" in out and "tenants" in out and "llmkit gateway --config config.toml" in out
    code, out, _ = invoke("gateway", "keys", "create", "--help")
    assert code == 0 and "KEY=$(llmkit gateway keys create" in out


def _get(url: str, key: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)


def test_through_a_running_gateway(tmp_path: Path) -> None:
    env = {
        "LLMKIT_GATEWAY_ADMIN_KEY": ADMIN_KEY,
        "LLMKIT_GATEWAY_PLATFORM_URL": f"sqlite:///{tmp_path}/p.db",
        "LLMKIT_GATEWAY_REQUIRE_API_KEY": "true",
    }
    with ServerProcess(tmp_path, "--port", "0", command="gateway", env=env) as server:
        url = server.wait_listening()
        assert _get(f"{url}/v1/models") == 401

        remote = ["--url", url, "--admin-key", ADMIN_KEY]
        code, out, _ = invoke(
            "gateway", "tenants", "create", "--name", "Acme", "--id", "acme", "--json", *remote
        )
        assert code == 0 and json.loads(out)["id"] == "acme"
        # The admin key may come from the environment, as the gateway itself reads it.
        done = run(
            "gateway", "keys", "create", "--name", "app", "--tenant", "acme", "--url", url, env={**env}
        )
        assert done.returncode == 0, done.stderr
        key = done.stdout.strip()
        assert _get(f"{url}/v1/models", key) == 200

        code, out, _ = invoke("gateway", "keys", "list", "--json", *remote)
        (listed,) = json.loads(out)["keys"]
        assert listed["tenant_id"] == "acme" and key.split("_", 2)[2] not in out
        code, out, _ = invoke("gateway", "tenants", "set", "acme", "--rpm", "100", "--json", *remote)
        assert code == 0 and json.loads(out)["quotas"]["rpm"] == 100
        code, out, _ = invoke("gateway", "tenants", "list", *remote)
        assert code == 0 and "Acme" in out

        code, _, err = invoke("gateway", "keys", "create", "--name", "x", "--scope", "nope", *remote)
        assert code == 2 and "HTTP 422" in err and "scopes" in err
        code, _, err = invoke("gateway", "keys", "list", "--url", url, "--admin-key", "wrong")
        assert code in (1, 2) and "HTTP 401" in err, err

        code, _, err = invoke("gateway", "keys", "revoke", listed["id"], *remote)
        assert code == 0
        assert _get(f"{url}/v1/models", key) == 403, "the gateway refuses a key revoked through it"
        code, _, err = invoke("gateway", "keys", "revoke", "nosuchkey", *remote)
        assert code == 1 and "HTTP 404" in err
    code, _, err = invoke("gateway", "keys", "list", "--url", url, "--admin-key", ADMIN_KEY)
    assert code == 1 and "cannot reach the gateway" in err


def test_keys_and_tenants_on_postgresql(postgres_url: str) -> None:
    store = ["--store", postgres_url]
    code, _, err = invoke(
        "gateway", "tenants", "create", "--name", "Acme", "--id", "acme", "--tpm", "9", *store
    )
    assert code == 0, err
    code, out, err = invoke("gateway", "keys", "create", "--name", "pg", "--tenant", "acme", *store)
    assert code == 0, err
    key = out.strip()
    code, out, _ = invoke("gateway", "keys", "list", "--tenant", "acme", "--json", *store)
    assert [k["name"] for k in json.loads(out)["keys"]] == ["pg"] and key not in out
    code, out, _ = invoke("gateway", "tenants", "set", "acme", "--tpm", "none", "--json", *store)
    assert code == 0 and json.loads(out)["quotas"]["tpm"] is None
