"""A stand-in for kohya sd-scripts, for the local runner and the training entry: `write_kohya_double(folder)`.

Its `train_network.py` takes the arguments the trainers pass (argparse refuses any
other), reads the TOML config, prints a few lines (one tqdm-style, ending in `\\r`) and
writes small `.safetensors` files into `--output_dir`. Unknown config arguments steer
it: `esd_double_fail = true` exits with code 3, `esd_double_sleep = N` sleeps first.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    '''
    """kohya double: train_network.py."""
    import argparse
    import json
    import os
    import struct
    import sys
    import time
    import tomllib

    parser = argparse.ArgumentParser()
    for name in ("--config_file", "--pretrained_model_name_or_path", "--train_data_dir", "--output_dir",
                 "--output_name", "--save_model_as"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    with open(args.config_file, "rb") as file:
        config = tomllib.load(file)
    flat = {key: value for section in config.values() for key, value in section.items()}
    model = args.pretrained_model_name_or_path
    print(f"double: model {os.path.basename(model)} of {os.path.getsize(model)} bytes")
    folders = sorted(os.listdir(args.train_data_dir))
    images = sum(len(files) for _, _, files in os.walk(args.train_data_dir))
    print(f"double: {images} files in {folders}")
    print(f"double: output_name={flat.get('output_name')} epochs={flat.get('max_train_epochs')} "
          f"optimizer={flat.get('optimizer_type')} save_model_as={args.save_model_as}")
    print(f"double: ESD variables seen: {sorted(name for name in os.environ if name.startswith('ESD_'))}")
    sys.stdout.flush()
    if flat.get("esd_double_sleep"):
        print("double: sleeping", flush=True)
        time.sleep(float(flat["esd_double_sleep"]))
    if flat.get("esd_double_fail"):
        print("double: CUDA out of memory", file=sys.stderr, flush=True)
        sys.exit(3)


    def save(name):
        header = json.dumps({"__metadata__": {"ss_output_name": args.output_name}}).encode()
        with open(os.path.join(args.output_dir, name), "wb") as file:
            file.write(struct.pack("<Q", len(header)) + header)


    epochs = int(flat.get("max_train_epochs", 1))
    every = int(flat.get("save_every_n_epochs") or 0)
    for epoch in range(1, epochs + 1):
        sys.stdout.write(f"steps: {100 * epoch // epochs}%|{epoch}/{epochs}\\r")
        print(f"epoch {epoch}/{epochs}", flush=True)
        if every and epoch % every == 0 and epoch != epochs:
            save(f"{args.output_name}-{epoch:06d}.safetensors")
    save(f"{args.output_name}.safetensors")
    print("double: model saved", flush=True)
    '''
)


def write_kohya_double(folder: Path, sdxl: bool = False) -> Path:
    """A kohya checkout in `folder` with the double as `train_network.py` (and `sdxl_train_network.py`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train_network.py").write_text(SCRIPT, encoding="utf-8")
    if sdxl:
        (folder / "sdxl_train_network.py").write_text(SCRIPT, encoding="utf-8")
    return folder
