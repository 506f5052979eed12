"""The environment variables the code reads, against their documentation: README.md names
every one, and .env.example lists every one with the code's default (plus the few that
docker-compose.yml alone reads)."""
from __future__ import annotations

import re

from deploy_files import DEPLOY_VARIABLES, SUBST, all_variables, dockerfile_args, same_as_default
from processes import REPO


def test_discovery_finds_the_known_variables():
    # Guards the discovery itself: if these go missing the other checks would prove nothing.
    names = all_variables()
    assert {"SERVICE_PORT", "MOCK_MODEL", "MODEL_CACHE_DIR", "JWT_SECRET", "PROXY_PORT",
            "UPSTREAM_URL", "XDG_CACHE_HOME", "HF_HUB_OFFLINE"} <= set(names)
    assert "RAW_URI" not in names  # a WSGI environ key, not a process variable


# ---------------------------------------------------------------------------------------------
# Documentation: README.md and .env.example


def env_example() -> dict[str, str]:
    """NAME -> value for every `NAME=value` line of .env.example, commented out or not."""
    entries = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            assert match[1] not in entries, f".env.example lists {match[1]} twice"
            entries[match[1]] = match[2].strip()
    return entries


def test_readme_documents_every_variable():
    readme = REPO / "README.md"
    text = readme.read_text() if readme.exists() else ""
    missing = [name for name in all_variables() if not re.search(rf"\b{name}\b", text)]
    assert not missing, "README.md does not document: " + ", ".join(missing)


def test_env_example_documents_every_variable_with_its_default():
    entries = env_example()
    missing = [name for name in all_variables() if name not in entries]
    assert not missing, ".env.example does not document: " + ", ".join(missing)
    wrong = {name: entries[name] for name in all_variables() if not same_as_default(name, entries[name])}
    assert not wrong, f".env.example shows values that are not the code's defaults: {wrong}"


def test_env_example_names_nothing_the_code_does_not_read():
    # Besides the code's settings, only what docker-compose.yml reads: build arguments and limits.
    unknown = set(env_example()) - set(all_variables()) - set(DEPLOY_VARIABLES)
    assert not unknown, f".env.example documents variables nobody reads: {sorted(unknown)}"
    for name in ("BASE_IMAGE", "TORCH_SOURCE", "TORCH_VARIANT"):
        assert name in dockerfile_args(REPO / "Dockerfile")


def test_env_example_documents_the_compose_variables_with_compose_defaults():
    entries = env_example()
    text = (REPO / "docker-compose.yml").read_text()
    for name, default in DEPLOY_VARIABLES.items():
        assert entries.get(name) == default, f".env.example: {name}={entries.get(name)!r}"
        fallbacks = {m[3] for m in SUBST.finditer(text) if m[1] == name}
        assert fallbacks == {default}, f"docker-compose.yml: {name} falls back to {fallbacks}"


def test_env_example_sets_only_the_required_secret():
    # Uncommented lines override compose's own values (UPSTREAM_URL!) once copied to .env.
    active = [line.split("=")[0] for line in (REPO / ".env.example").read_text().splitlines()
              if re.match(r"[A-Z][A-Z0-9_]*=", line)]
    assert active == ["JWT_SECRET"]
