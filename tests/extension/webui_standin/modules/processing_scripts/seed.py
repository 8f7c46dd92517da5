"""The built-in "Seed" controls (A1111 1.7+ `modules/processing_scripts/seed.py`): an always-on script whose
`setup` sets `p.seed` from its arguments, and whose UI sits in the form's "seed" section."""

import gradio as gr
from modules import scripts


class ScriptSeed(scripts.ScriptBuiltinUI):
    section = "seed"
    create_group = False

    def title(self):
        return "Seed"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        self.seed = gr.Number(label="Seed", value=-1, precision=0)
        seed_checkbox = gr.Checkbox(label="Extra", value=False)
        self.subseed = gr.Number(label="Variation seed", value=-1, precision=0)
        self.subseed_strength = gr.Slider(label="Variation strength", value=0.0, minimum=0, maximum=1, step=0.01)
        self.seed_resize_from_w = gr.Slider(minimum=0, maximum=2048, step=8, label="Resize seed from width", value=0)
        self.seed_resize_from_h = gr.Slider(minimum=0, maximum=2048, step=8, label="Resize seed from height", value=0)
        return (
            self.seed,
            seed_checkbox,
            self.subseed,
            self.subseed_strength,
            self.seed_resize_from_w,
            self.seed_resize_from_h,
        )

    def setup(self, p, seed, seed_checkbox, subseed, subseed_strength, seed_resize_from_w, seed_resize_from_h):
        p.seed = seed

        if seed_checkbox and subseed_strength > 0:
            p.subseed = subseed
            p.subseed_strength = subseed_strength

        if seed_checkbox and seed_resize_from_w > 0 and seed_resize_from_h > 0:
            p.seed_resize_from_w = seed_resize_from_w
            p.seed_resize_from_h = seed_resize_from_h
