"""`save_image` with the WebUI's signature and return value (PNG with its `parameters` text), `image_grid`."""

import math
import os
import re

from PIL import Image, PngImagePlugin

from modules import script_callbacks
from modules.shared import opts

saved: list[str] = []


class GridAnnotation:
    def __init__(self, text="", is_active=True):
        self.text = text
        self.is_active = is_active
        self.size = None


def image_grid(imgs, batch_size=1, rows=None):
    if rows is None:
        rows = math.floor(math.sqrt(len(imgs))) if batch_size == 1 else batch_size
        rows = max(1, rows)
    cols = math.ceil(len(imgs) / rows)
    w, h = imgs[0].size
    grid = Image.new("RGB", size=(cols * w, rows * h), color="black")
    for i, img in enumerate(imgs):
        grid.paste(img, box=(i % cols * w, i // cols * h))
    return grid


def draw_grid_annotations(im, width, height, hor_texts, ver_texts, margin=0):
    return im


def check_grid_size(imgs):
    return True


def _sanitize(text: str) -> str:
    return re.sub(r'[<>:"/\\|?*\n\r\t]', "", text.replace(" ", "_"))[:64]


def save_image(
    image,
    path,
    basename,
    seed=None,
    prompt=None,
    extension="png",
    info=None,
    short_filename=False,
    no_prompt=False,
    grid=False,
    pnginfo_section_name="parameters",
    p=None,
    existing_info=None,
    forced_filename=None,
    suffix="",
    save_to_dirs=None,
):
    """Save an image; returns (fullfn, txt_fullfn) like the WebUI's (txt_fullfn None: no .txt saved)."""
    os.makedirs(path, exist_ok=True)
    number = len([x for x in os.listdir(path) if not x.startswith(".")])
    if forced_filename:
        name = forced_filename
    elif short_filename or seed is None or prompt is None:
        name = f"{number:05}-{basename}" if basename else f"{number:05}"
    else:
        name = f"{number:05}-{seed}-{_sanitize(prompt)}"
    fullfn = os.path.join(path, f"{name}{suffix}.{extension}")
    pnginfo = PngImagePlugin.PngInfo()
    if opts.enable_pnginfo and info is not None:
        pnginfo.add_text(pnginfo_section_name, info)
    image.save(fullfn, pnginfo=pnginfo)
    image.already_saved_as = fullfn
    saved.append(fullfn)
    script_callbacks.image_saved_callback(None)
    return fullfn, None
