"""A small X/Y/Z plot with the real one's surface: `AxisOption` (same signature), the module-level
`axis_options` list other extensions append to, `process_images` imported by name and called per cell on a
copy of `p`, `processing.create_infotext` on that copy, and the settings helper that reloads the model when
the plot ends."""

import csv
from copy import copy
from io import StringIO
from itertools import chain

import gradio as gr
import modules.scripts as scripts
import modules.sd_models
import modules.sd_vae
import modules.shared as shared
from modules import errors, images, processing
from modules.processing import Processed, process_images
from modules.shared import opts, state


def apply_field(field):
    def fun(p, x, xs):
        setattr(p, field, x)

    return fun


def apply_checkpoint(p, x, xs):
    info = modules.sd_models.get_closet_checkpoint_match(x)
    if info is None:
        raise RuntimeError(f"Unknown checkpoint: {x}")
    p.override_settings["sd_model_checkpoint"] = info.name


def format_value_add_label(p, opt, x):
    return f"{opt.label}: {x}"


def format_value(p, opt, x):
    return x


def do_nothing(p, x, xs):
    pass


def format_nothing(p, opt, x):
    return ""


def csv_string_to_list_strip(data_str):
    return list(map(str.strip, chain.from_iterable(csv.reader(StringIO(data_str), skipinitialspace=True))))


class AxisOption:
    def __init__(
        self,
        label,
        type,
        apply,
        format_value=format_value_add_label,
        confirm=None,
        cost=0.0,
        choices=None,
        prepare=None,
    ):
        self.label = label
        self.type = type
        self.apply = apply
        self.format_value = format_value
        self.confirm = confirm
        self.cost = cost
        self.prepare = prepare
        self.choices = choices


class AxisOptionImg2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = True


class AxisOptionTxt2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = False


axis_options = [
    AxisOption("Nothing", str, do_nothing, format_value=format_nothing),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Steps", int, apply_field("steps")),
    AxisOption("CFG Scale", float, apply_field("cfg_scale")),
    AxisOption(
        "Checkpoint name",
        str,
        apply_checkpoint,
        format_value=format_value,
        cost=1.0,
        choices=lambda: sorted(modules.sd_models.checkpoints_list),
    ),
]


class SharedSettingsStackHelper:
    def __enter__(self):
        pass

    def __exit__(self, exc_type, exc_value, tb):
        modules.sd_models.reload_model_weights()
        modules.sd_vae.reload_vae_weights()


class Script(scripts.Script):
    def title(self):
        return "X/Y/Z plot"

    def ui(self, is_img2img):
        self.current_axis_options = [x for x in axis_options if type(x) == AxisOption or x.is_img2img == is_img2img]  # noqa: E721
        labels = [x.label for x in self.current_axis_options]
        x_type = gr.Dropdown(label="X type", choices=labels, value=labels[1], type="index")
        x_values = gr.Textbox(label="X values", lines=1)
        x_values_dropdown = gr.Dropdown(label="X values", visible=False, multiselect=True, interactive=True)
        y_type = gr.Dropdown(label="Y type", choices=labels, value=labels[0], type="index")
        y_values = gr.Textbox(label="Y values", lines=1)
        y_values_dropdown = gr.Dropdown(label="Y values", visible=False, multiselect=True, interactive=True)
        z_type = gr.Dropdown(label="Z type", choices=labels, value=labels[0], type="index")
        z_values = gr.Textbox(label="Z values", lines=1)
        z_values_dropdown = gr.Dropdown(label="Z values", visible=False, multiselect=True, interactive=True)
        draw_legend = gr.Checkbox(label="Draw legend", value=True)
        no_fixed_seeds = gr.Checkbox(label="Keep -1 for seeds", value=False)
        include_lone_images = gr.Checkbox(label="Include Sub Images", value=False)
        include_sub_grids = gr.Checkbox(label="Include Sub Grids", value=False)
        margin_size = gr.Slider(label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2)
        csv_mode = gr.Checkbox(label="Use text inputs instead of dropdowns", value=False)
        return [
            x_type,
            x_values,
            x_values_dropdown,
            y_type,
            y_values,
            y_values_dropdown,
            z_type,
            z_values,
            z_values_dropdown,
            draw_legend,
            include_lone_images,
            include_sub_grids,
            no_fixed_seeds,
            margin_size,
            csv_mode,
        ]

    def run(
        self,
        p,
        x_type,
        x_values,
        x_values_dropdown,
        y_type,
        y_values,
        y_values_dropdown,
        z_type,
        z_values,
        z_values_dropdown,
        draw_legend,
        include_lone_images,
        include_sub_grids,
        no_fixed_seeds,
        margin_size,
        csv_mode,
    ):
        if not no_fixed_seeds:
            modules.processing.fix_seed(p)

        if not opts.return_grid:
            p.batch_size = 1

        def process_axis(opt, vals, vals_dropdown):
            if opt.label == "Nothing":
                return [0]
            valslist = vals_dropdown if opt.choices is not None and not csv_mode else csv_string_to_list_strip(vals)
            valslist = [opt.type(x) for x in valslist]
            if opt.confirm:
                opt.confirm(p, valslist)
            return valslist

        x_opt = self.current_axis_options[x_type]
        xs = process_axis(x_opt, x_values, x_values_dropdown)
        y_opt = self.current_axis_options[y_type]
        ys = process_axis(y_opt, y_values, y_values_dropdown)
        z_opt = self.current_axis_options[z_type]
        zs = process_axis(z_opt, z_values, z_values_dropdown)

        state.job_count = len(xs) * len(ys) * len(zs) * p.n_iter
        grid_infotext = [None]
        cells = []

        def cell(x, y, z):
            if shared.state.interrupted:
                return Processed(p, [], p.seed, "")

            pc = copy(p)
            pc.styles = pc.styles[:]
            x_opt.apply(pc, x, xs)
            y_opt.apply(pc, y, ys)
            z_opt.apply(pc, z, zs)

            try:
                res = process_images(pc)
            except Exception as e:
                errors.display(e, "generating image for xyz plot")

                res = Processed(p, [], p.seed, "")

            if grid_infotext[0] is None and res.images:
                pc.extra_generation_params = copy(pc.extra_generation_params)
                pc.extra_generation_params["Script"] = self.title()
                grid_infotext[0] = processing.create_infotext(pc, pc.all_prompts, pc.all_seeds, pc.all_subseeds)

            return res

        with SharedSettingsStackHelper():
            for z in zs:
                for y in ys:
                    for x in xs:
                        state.job = f"{len(cells) + 1} out of {len(xs) * len(ys) * len(zs)}"
                        cells.append(cell(x, y, z))

        first = next((c for c in cells if c.images), None)
        if first is None:
            return Processed(p, [])

        processed = copy(first)
        processed.images = [c.images[0] if c.images else None for c in cells]
        processed.all_prompts = [c.prompt for c in cells]
        processed.all_seeds = [c.seed for c in cells]
        processed.infotexts = [c.infotexts[0] if c.infotexts else "" for c in cells]
        grid = images.image_grid([i for i in processed.images if i is not None], rows=len(ys))
        processed.images.insert(0, grid)
        processed.infotexts.insert(0, grid_infotext[0])
        processed.index_of_first_image = 1

        if opts.grid_save:
            images.save_image(
                processed.images[0],
                p.outpath_grids,
                "xyz_grid",
                info=processed.infotexts[0],
                extension=opts.grid_format,
                prompt=processed.all_prompts[0],
                seed=processed.all_seeds[0],
                grid=True,
                p=processed,
            )

        if not include_lone_images:
            processed.images = processed.images[:1]

        return processed
