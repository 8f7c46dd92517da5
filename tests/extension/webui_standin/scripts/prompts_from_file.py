"""Prompts from file or textbox, as the real script runs it: one `process_images(copy_p)` per line,
`process_images` imported by name."""

import copy
import random

import gradio as gr
import modules.scripts as scripts
from modules.processing import Processed, process_images
from modules.shared import state


class Script(scripts.Script):
    def title(self):
        return "Prompts from file or textbox"

    def ui(self, is_img2img):
        checkbox_iterate = gr.Checkbox(label="Iterate seed every line", value=False)
        checkbox_iterate_batch = gr.Checkbox(label="Use same random seed for all lines", value=False)
        prompt_position = gr.Radio(["start", "end"], label="Insert prompts at the", value="start")
        prompt_txt = gr.Textbox(label="List of prompt inputs", lines=1)
        return [checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt]

    def run(self, p, checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt: str):
        lines = [x for x in (x.strip() for x in prompt_txt.splitlines()) if x]

        p.do_not_save_grid = True

        jobs = [{"prompt": line} for line in lines]

        if (checkbox_iterate or checkbox_iterate_batch) and p.seed == -1:
            p.seed = int(random.randrange(4294967294))

        state.job_count = len(jobs) * p.n_iter

        images = []
        all_prompts = []
        infotexts = []
        for args in jobs:
            state.job = f"{state.job_no + 1} out of {state.job_count}"

            copy_p = copy.copy(p)
            for k, v in args.items():
                if k == "prompt":
                    copy_p.prompt = (v + " " + p.prompt) if prompt_position == "start" else (p.prompt + " " + v)
                    copy_p.prompt = copy_p.prompt.strip()
                else:
                    setattr(copy_p, k, v)

            proc = process_images(copy_p)
            images += proc.images

            if checkbox_iterate:
                p.seed = p.seed + (p.batch_size * p.n_iter)
            all_prompts += proc.all_prompts
            infotexts += proc.infotexts

        return Processed(p, images, p.seed, "", all_prompts=all_prompts, infotexts=infotexts)
