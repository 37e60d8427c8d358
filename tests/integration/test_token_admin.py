"""``papercrane token create|list|revoke`` with ``PAPERCRANE_URL`` set work on that
server, through its API, with an admin token: they once wrote to the local home's
database, which the server never reads, and the new token was refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from ..server_fixture import ServerProcess

CLI = [sys.executable, "-m", "papercrane.backend.cli"]


def token_cli(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """The CLI on a client machine: its own home, no access to the server's database."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("PAPERCRANE_")}
    full.update({"PAPERCRANE_HOME": str(tmp_path / "client-home"), **env})
    return subprocess.run([*CLI, "token", *args], env=full, capture_output=True, text=True)


def whoami(server: ServerProcess, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{server.url}/api/v1/whoami", headers=headers, timeout=10).status_code


def test_the_operator_manages_the_servers_tokens_from_a_client(
    server: ServerProcess, tmp_path: Path
) -> None:
    env = {"PAPERCRANE_URL": server.url, "PAPERCRANE_TOKEN": server.admin}
    made = token_cli(tmp_path, env, "create", "--project", "team", "--name", "ci")
    assert made.returncode == 0, made.stderr
    new = made.stdout.strip()
    assert new.startswith("pc_") and whoami(server, new) == 200  # the server knows it
    assert not (tmp_path / "client-home").exists()  # nothing stored on the client
    listed = token_cli(tmp_path, env, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert "pc_" not in listed.stdout  # never a secret
    (mine,) = [r for r in rows if r["name"] == "ci"]
    assert (mine["project"], mine["role"], mine["revoked"]) == ("team", "write", False)
    assert {r["project"] for r in rows} == {"*", "team"}  # the operator sees them all
    gone = token_cli(tmp_path, env, "revoke", mine["id"])
    assert gone.returncode == 0 and "revoked 1 token" in gone.stdout, gone.stderr
    assert whoami(server, new) == 401
    again = token_cli(tmp_path, env, "revoke", mine["id"])
    assert again.returncode == 1 and f"no active token with id {mine['id']!r}" in again.stderr


def test_a_projects_admin_manages_only_its_projects_tokens(
    server: ServerProcess, tmp_path: Path
) -> None:
    other = server.token("other", "read")
    env = {"PAPERCRANE_URL": server.url, "PAPERCRANE_TOKEN": server.token("team", "admin")}
    made = token_cli(tmp_path, env, "create", "--project", "team", "--role", "read")
    assert made.returncode == 0 and whoami(server, made.stdout.strip()) == 200, made.stderr
    rows = json.loads(token_cli(tmp_path, env, "list", "--json").stdout)
    assert {r["project"] for r in rows} == {"team"}  # not the operator's, not other's
    for args in (["create", "--project", "other"], ["create", "--project", "*", "--role", "admin"]):
        refused = token_cli(tmp_path, env, *args)
        assert refused.returncode == 1, refused.stdout
        assert "refused the token" in refused.stderr, refused.stderr
    other_id = next(
        r["id"]
        for r in json.loads(server.cli("token", "list", "--json"))
        if r["project"] == "other"
    )
    refused = token_cli(tmp_path, env, "revoke", other_id)
    assert refused.returncode == 1 and "no active token" in refused.stderr
    assert whoami(server, other) == 200


def test_a_token_that_is_no_admin_is_told_what_is_needed(
    server: ServerProcess, tmp_path: Path
) -> None:
    env = {"PAPERCRANE_URL": server.url, "PAPERCRANE_TOKEN": server.token("team", "write")}
    r = token_cli(tmp_path, env, "create", "--project", "team")
    assert r.returncode == 1 and r.stdout == ""
    (line,) = r.stderr.strip().splitlines()  # one line, no traceback
    assert "this token's role is 'write'; this needs 'admin'" in line, line
    assert "needs an admin token in PAPERCRANE_TOKEN" in line and "--db" in line, line
    missing = token_cli(tmp_path, {"PAPERCRANE_URL": server.url}, "list")
    assert missing.returncode == 1
    assert "PAPERCRANE_URL is set" in missing.stderr and "--db" in missing.stderr
    assert not (tmp_path / "client-home").exists()


def test_a_database_named_is_used_even_with_papercrane_url(
    server: ServerProcess, tmp_path: Path
) -> None:
    """--db (or PAPERCRANE_DB) says where the tokens are: on the server's machine, its
    database, as before."""
    db = f"sqlite:///{server.home / 'papercrane.db'}"
    env = {"PAPERCRANE_URL": server.url}  # (no token needed: the database is at hand)
    made = token_cli(tmp_path, env, "create", "--project", "team", "--db", db)
    assert made.returncode == 0 and whoami(server, made.stdout.strip()) == 200, made.stderr
    by_env = token_cli(tmp_path, {**env, "PAPERCRANE_DB": db}, "list", "--json")
    assert by_env.returncode == 0 and len(json.loads(by_env.stdout)) == 2, by_env.stderr
