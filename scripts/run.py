#!/usr/bin/env python3
"""Start the Inference API under gunicorn (what `make run` does), after checking the settings."""
import os
import sys
from pathlib import Path

from inference_api.config import Config, ConfigError
from inference_api.model_store import ModelLoadError, model_source

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    """Check the configuration and the model path, then hand over to gunicorn."""
    try:
        config = Config.from_env()
        if not config.mock_model:
            model_source(config.model_path)
    except (ConfigError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    os.chdir(REPO)
    os.execv(gunicorn, [gunicorn, "--config", "gunicorn.conf.py"])


if __name__ == "__main__":
    sys.exit(main())
