#!/usr/bin/env python3
"""`make run`: the Inference API and the JWT proxy in front of it; Ctrl-C stops both."""
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import jwt

from common.settings import ConfigError
from inference_api.config import Config
from inference_api.model.files import ModelLoadError, model_source

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def check_settings() -> Config:
    """The API's settings, and its model path when not mocked; one clear line if wrong."""
    config = Config.from_env()
    if not config.mock_model:
        model_source(config.model_path)
    return config


def local_secret(env: dict) -> tuple[str, str | None]:
    """JWT_SECRET from the environment, or a fresh one for this run and a token for it."""
    if env.get("JWT_SECRET"):
        return env["JWT_SECRET"], None
    secret = secrets.token_urlsafe(32)
    token = jwt.encode({"team_id": "local", "token_id": "make-run"}, secret, algorithm="HS256")
    print("JWT_SECRET is not set: using a random secret for this run. A token for it:\n"
          f"  export TOKEN={token}\n", flush=True)
    return secret, token


def page_url(port: str, token: str | None) -> str:
    """The chat page's address; the token rides in the fragment, which no server or log sees."""
    return f"http://127.0.0.1:{port}/" + (f"#token={token}" if token else "")


def main() -> int:
    """Start both servers, wait until either ends or Ctrl-C, then stop both."""
    try:
        config = check_settings()
    except (ConfigError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["JWT_SECRET"], token = local_secret(env)
    env.setdefault("UPSTREAM_URL", f"http://127.0.0.1:{config.service_port}")
    gunicorn = str(BIN / "gunicorn")
    servers = [
        subprocess.Popen([gunicorn, "--config", "gunicorn.conf.py"], cwd=REPO, env=env),
        subprocess.Popen([gunicorn, "--config", "proxy/gunicorn.conf.py"], cwd=REPO, env=env),
    ]
    proxy_port = env.get("PROXY_PORT", "1223")
    print(f"API on :{config.service_port}, proxy on :{proxy_port}. Try:\n"
          f"  curl -N -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' "
          f"-d '{{\"text\": \"Hello\", \"max_tokens\": 40}}' "
          f"http://127.0.0.1:{proxy_port}/predictions/{config.model_id}\n"
          f"Chat in the browser: {page_url(proxy_port, token)}"
          + ("" if token else " (paste a token made with scripts/jwt_util.py)") + "\n", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    code = 0
    try:
        while all(s.poll() is None for s in servers):
            time.sleep(0.5)
        code = next(s.returncode for s in servers if s.poll() is not None)
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
        for server in servers:
            try:
                server.wait(40)
            except subprocess.TimeoutExpired:
                server.kill()
    return code


if __name__ == "__main__":
    sys.exit(main())
