"""The WebUI's shared objects: `cmd_opts`, `opts`, `state`, `prompt_styles`, `sd_model` (None: no model)."""

from modules import options, shared_cmd_options, shared_state, styles

cmd_opts = shared_cmd_options.cmd_opts
parser = shared_cmd_options.parser

opts = options.Options()
restricted_opts = {
    "samples_filename_pattern",
    "directories_filename_pattern",
    "outdir_samples",
    "outdir_txt2img_samples",
}
state = shared_state.State()
prompt_styles = styles.StyleDatabase()
sd_model = None
demo = None
latent_upscale_modes = {"Latent": {"mode": "bilinear", "antialias": False}}
sd_upscalers = []


class TotalTQDM:
    def updateTotal(self, new_total):  # noqa: N802 - the WebUI's name
        pass

    def clear(self):
        pass


total_tqdm = TotalTQDM()
