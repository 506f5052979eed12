"""scripts/jwt_util.py run as a user would: the executable itself, in a shell-like environment."""
from __future__ import annotations

import json
import os
import subprocess
import time

import jwt
import pytest

from processes import REPO, VENV_BIN

SCRIPT = str(REPO / "scripts" / "jwt_util.py")
SECRET = "jwt-util-test-secret-0123456789abcdef"
CLAIMS = {"team_id": "team-a", "token_id": "tok-1"}


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the script through its shebang, with the project's Python first on PATH."""
    full_env = {k: v for k, v in os.environ.items() if k != "JWT_SECRET"}
    full_env["PATH"] = f"{VENV_BIN}{os.pathsep}{full_env.get('PATH', '')}"
    full_env.update(env or {})
    return subprocess.run([SCRIPT, *args], env=full_env, capture_output=True, text=True,
                          timeout=30)


def encode(claims=CLAIMS, *extra: str) -> str:
    result = run("--secret", SECRET, "encode", json.dumps(claims), *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_encode_then_decode_round_trip():
    token = encode()
    assert jwt.decode(token, SECRET, algorithms=["HS256"]) == CLAIMS
    result = run("--secret", SECRET, "decode", token)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == CLAIMS


def test_expires_in_adds_exp():
    before = int(time.time())
    claims = jwt.decode(encode(CLAIMS, "--expires-in", "120"), SECRET, algorithms=["HS256"])
    assert before + 120 <= claims["exp"] <= int(time.time()) + 120


@pytest.mark.parametrize("token, reason", [
    (jwt.encode({**CLAIMS, "exp": int(time.time()) - 3600}, SECRET, algorithm="HS256"), "expired"),
    (jwt.encode(CLAIMS, "some-other-secret-0123456789abcdef", algorithm="HS256"), "signature"),
    (jwt.encode({"team_id": "t"}, SECRET, algorithm="HS256"), "token_id"),
    ("not.a.token", "well-formed"),
])
def test_decode_of_invalid_token_fails_with_reason(token, reason):
    result = run("--secret", SECRET, "decode", token)
    assert result.returncode != 0
    assert result.stdout == ""
    assert reason in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("claims", ['{"team_id": ', "[1, 2]", '{"team_id": "t"}'])
def test_unusable_claims_give_one_line_error(claims):
    result = run("--secret", SECRET, "encode", claims)
    assert result.returncode != 0
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ")


def test_secret_from_environment():
    result = run("encode", json.dumps(CLAIMS), env={"JWT_SECRET": SECRET})
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert jwt.decode(token, SECRET, algorithms=["HS256"]) == CLAIMS
    assert run("decode", token, env={"JWT_SECRET": SECRET}).returncode == 0
    assert run("decode", token, env={"JWT_SECRET": "wrong-secret-0123456789abcdef0123"}).returncode == 1


def test_secret_option_after_command_overrides_environment():
    result = run("encode", json.dumps(CLAIMS), "--secret", SECRET,
                 env={"JWT_SECRET": "env-secret-0123456789abcdef0123456"})
    assert jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"]) == CLAIMS


def test_no_secret_is_a_one_line_error():
    result = run("encode", json.dumps(CLAIMS))
    assert result.returncode != 0
    assert result.stderr.strip() == "error: no secret: pass --secret or set JWT_SECRET"


def test_encode_sets_the_policy_claims():
    token = encode(CLAIMS, "--models", "Smol*,other", "--models", "third", "--rpm", "60",
                   "--tpm", "0")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims == {**CLAIMS, "models": ["Smol*", "other", "third"], "rpm": 60, "tpm": 0}


@pytest.mark.parametrize("extra", [["--rpm", "-1"], ["--tpm", "-5"]])
def test_encode_refuses_a_policy_the_proxy_would_refuse(extra):
    result = run("--secret", SECRET, "encode", json.dumps(CLAIMS), *extra)
    assert result.returncode == 2 and "token claim" in result.stderr and not result.stdout


def test_decode_names_a_malformed_policy_claim():
    token = jwt.encode({**CLAIMS, "models": "Smol*"}, SECRET, algorithm="HS256")
    result = run("--secret", SECRET, "decode", token)
    assert result.returncode == 1 and "token claim models must be a list" in result.stderr
