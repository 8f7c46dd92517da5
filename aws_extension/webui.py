"""The extension's only contact with the WebUI (`modules.*`): the cloud switch's UI, the hook that generates in
the cloud instead of loading a local model, and the X/Y/Z plot axes.

How it hooks in (checked against AUTOMATIC1111/stable-diffusion-webui 1.6-1.10 and lllyasviel/
stable-diffusion-webui-forge: modules/processing.py `process_images`, `process_images_inner`, `Processed.__init__`,
`StableDiffusionProcessing.setup_prompts` and its `scripts`/`script_args` properties, `get_fixed_seed`;
modules/scripts.py `ScriptRunner.run`, `setup_scrips`, `scripts_data`, `load_scripts`; modules/script_loading.py
`load_module`, `loaded_scripts`; modules/txt2img.py, modules/img2img.py; modules/shared_state.py `State`;
modules/images.py `save_image`; modules/script_callbacks.py; scripts/xyz_grid.py, prompts_from_file.py,
prompt_matrix.py):

- `process_images(p)` loads the checkpoint (`sd_models.reload_model_weights`) before anything else, after only
  `p.scripts.before_process`: so no Script hook can keep it from loading a model. The hook therefore wraps
  `modules.processing.process_images` itself. txt2img.py calls it through the module; img2img.py, the API and the
  X/Y/Z, prompts-from-file and prompt-matrix scripts imported it by name, so every module holding the original
  (sys.modules, `scripts_data`, `script_loading.loaded_scripts`: A1111 does not register script modules in
  sys.modules) is re-pointed to the wrapper, at import and again before the UI is built.
- The switch reaches `p` through the Script's `setup` hook, which the WebUI runs as soon as `p.scripts` and
  `p.script_args` are set (before `ScriptRunner.run` and `process_images`); where `setup` did not run, the
  wrapper reads the script's slice of `p.script_args` itself.
- Scripts that generate through the WebUI's loop reload the local model when they end (X/Y/Z's
  `SharedSettingsStackHelper`): while a cloud generation runs (`ScriptRunner.run` or `process_images` with the
  switch on), `sd_models.reload_model_weights` and `sd_vae.reload_vae_weights` do nothing.
- The cloud path returns the WebUI's own `Processed(p, images_list, seed, info, subseed, all_prompts,
  all_negative_prompts, all_seeds, all_subseeds, index_of_first_image, infotexts)` (no Forge-only arguments),
  with `p.all_*` set as `process_images_inner` sets them, images saved with `images.save_image` as it saves them,
  and the grid as it makes it. Other scripts' processing hooks are not run: they would need the local model.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from typing import Any

import modules.scripts
import modules.shared as shared
from modules import images, processing, script_callbacks

log = logging.getLogger("aws_extension.webui")

TITLE = "Cloud inference"
SCRIPT_CLASS = "CloudInference"
SETTINGS_ATTR = "esd_cloud"  # CloudSettings set on `p` by the Script's setup hook
CHECKPOINT_ATTR = "esd_cloud_checkpoint"  # set by the X/Y/Z "[Cloud] Checkpoint" axis
VAE_ATTR = "esd_cloud_vae"  # set by the X/Y/Z "[Cloud] VAE" axis
INFERENCE_TYPES = ("Async", "Real-time")
AUTOMATIC_VAE = "Automatic"
FORWARDED_OPTIONS = ("CLIP_stop_at_last_layers", "eta_noise_seed_delta")  # local settings that shape the image
CHOICES_TTL_S = 30.0
STATUS_STEPS = {"created": 1, "inprogress": 2, "succeed": 3, "failed": 3}
MARK = "_esd_cloud_wrapper"
POLL_S = 1.0  # how soon Interrupt is heard while a job runs (each poll is a long poll that ends with the job)


class CloudGenerationError(RuntimeError):
    """A cloud generation that could not run; the message is the reason (the middleware's own when it has one)."""


# --- the switch ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CloudSettings:
    """The Script's arguments: [enabled, endpoint type, endpoint name, cloud checkpoint, cloud VAE]."""

    enabled: bool = False
    inference_type: str = "Async"
    endpoint_name: str | None = None
    checkpoint: str | None = None
    vae: str | None = None

    @classmethod
    def from_args(cls, args: Sequence[Any]) -> CloudSettings:
        values = list(args) + [None] * (5 - len(args))
        enabled, inference_type, endpoint_name, checkpoint, vae = values[:5]
        return cls(
            enabled=bool(enabled) and enabled not in ("false", "False", "0"),
            inference_type=inference_type if inference_type in INFERENCE_TYPES else "Async",
            endpoint_name=_text(endpoint_name),
            checkpoint=_text(checkpoint),
            vae=_text(vae),
        )


def _text(value: Any) -> str | None:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if value is None:
        return None
    return str(value).strip() or None


def setup(p: Any, *args: Any) -> None:
    """The Script's `setup` hook: remember the switch on `p` (copies made by X/Y/Z and others keep it)."""
    setattr(p, SETTINGS_ATTR, CloudSettings.from_args(args))


def settings_of(p: Any) -> CloudSettings | None:
    """The cloud settings of `p` (from `setup`, else from its script args), with the X/Y/Z axes' overrides."""
    settings = getattr(p, SETTINGS_ATTR, None)
    if not isinstance(settings, CloudSettings):
        settings = _settings_from_script_args(p)
    if settings is None:
        return None
    checkpoint = getattr(p, CHECKPOINT_ATTR, None)
    vae = getattr(p, VAE_ATTR, None)
    if checkpoint:
        settings = dataclasses.replace(settings, checkpoint=checkpoint)
    if vae:
        settings = dataclasses.replace(settings, vae=vae)
    return settings


def _settings_from_script_args(p: Any) -> CloudSettings | None:
    runner, args = getattr(p, "scripts", None), getattr(p, "script_args", None)
    if runner is None or not args:
        return None
    for script in getattr(runner, "alwayson_scripts", ()):
        if type(script).__name__ == SCRIPT_CLASS and script.args_from is not None:
            return CloudSettings.from_args(list(args[script.args_from : script.args_to]))
    return None


def _enabled(p: Any) -> bool:
    settings = settings_of(p)
    return bool(settings and settings.enabled)


# --- installing the hook ------------------------------------------------------------------------------------

_scope = threading.local()


@contextmanager
def cloud_scope() -> Any:
    """While inside, this thread generates in the cloud: local model reloads are skipped."""
    _scope.depth = getattr(_scope, "depth", 0) + 1
    try:
        yield
    finally:
        _scope.depth -= 1


def in_cloud_scope() -> bool:
    return getattr(_scope, "depth", 0) > 0


def _wrap(original: Callable[..., Any], wrapper: Callable[..., Any]) -> Callable[..., Any]:
    wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    wrapper.__name__ = getattr(original, "__name__", wrapper.__name__)
    wrapper.__doc__ = getattr(original, "__doc__", None)
    setattr(wrapper, MARK, True)
    return wrapper


def _is_ours(function: Any) -> bool:
    return bool(getattr(function, MARK, False))


def _make_process_images(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def process_images(p: Any) -> Any:
        settings = settings_of(p)
        if settings is None or not settings.enabled:
            return original(p)
        with cloud_scope():
            return generate(p, settings)

    return _wrap(original, process_images)


def _make_reload_guard(original: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if in_cloud_scope():
            log.debug("cloud generation: %s skipped", getattr(original, "__name__", "reload"))
            return args[0] if args else kwargs.get("sd_model")
        return original(*args, **kwargs)

    return _wrap(original, guarded)


def _make_run(original: Callable[..., Any]) -> Callable[..., Any]:
    def run(self: Any, p: Any, *args: Any) -> Any:
        if _enabled(p):
            with cloud_scope():
                return original(self, p, *args)
        return original(self, p, *args)

    return _wrap(original, run)


def _modules_to_repoint() -> list[Any]:
    import sys

    found = {id(module): module for module in list(sys.modules.values()) if module is not None}
    for data in list(getattr(modules.scripts, "scripts_data", [])):
        module = getattr(data, "module", None)
        if module is not None:
            found.setdefault(id(module), module)
    try:
        from modules import script_loading

        for module in list(getattr(script_loading, "loaded_scripts", {}).values()):
            found.setdefault(id(module), module)
    except ImportError:
        pass
    return list(found.values())


def _wrapped(module: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> tuple[Any, Any]:
    """(original, wrapper) for `module.name`, wrapping it on first call; (None, None) if it has no such name."""
    current = getattr(module, name, None)
    if current is None:
        return None, None
    if _is_ours(current):
        return current.__wrapped__, current
    wrapper = make(current)
    setattr(module, name, wrapper)
    return current, wrapper


def install() -> None:
    """Install the cloud hook (idempotent: safe at every script reload and callback).

    Wraps `processing.process_images` and guards the model reloads, then points every module that imported one
    of them by name at the wrapper, in one pass over the loaded modules."""
    targets: list[tuple[Any, str, Callable[..., Any]]] = [(processing, "process_images", _make_process_images)]
    try:
        from modules import sd_models, sd_vae

        targets += [(sd_models, "reload_model_weights", _make_reload_guard)]
        targets += [(sd_vae, "reload_vae_weights", _make_reload_guard)]
    except ImportError:
        log.warning("cloud inference: no sd_models/sd_vae module; model reloads are not guarded")
    replace: dict[str, tuple[Any, Any]] = {}
    for module, name, make in targets:
        original, wrapper = _wrapped(module, name, make)
        if original is not None:
            replace[name] = (original, wrapper)
    loaded = _modules_to_repoint()
    for other in loaded:
        namespace = getattr(other, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for name, (original, wrapper) in replace.items():
            if namespace.get(name) is original:
                setattr(other, name, wrapper)
    runner = modules.scripts.ScriptRunner
    if not _is_ours(runner.run):
        runner.run = _make_run(runner.run)
    add_xyz_axes(loaded)
    if getattr(shared.cmd_opts, "esd_login", False):
        install_login()


def on_before_ui() -> None:
    """Once every script is loaded (the WebUI also calls this in API-only mode): hook what loaded after us."""
    install()


# --- generation ------------------------------------------------------------------------------------------


def generate(p: Any, settings: CloudSettings) -> Any:
    """Generate `p` in the cloud and return the WebUI's `Processed`; no local model is touched."""
    from aws_extension import payload
    from aws_extension.client import ApiError
    from aws_extension.jobs import JobFailed, JobInterrupted, run_job

    if not settings.checkpoint:
        raise CloudGenerationError("Cloud inference is on, but no cloud checkpoint is chosen: pick one (🔄 refreshes)")
    img2img = getattr(p, "init_images", None) is not None or isinstance(
        p, getattr(processing, "StableDiffusionProcessingImg2Img", ())
    )
    task = "img2img" if img2img else "txt2img"
    state = shared.state
    opts = shared.opts

    _prepare(p)
    hr = bool(getattr(p, "enable_hr", False)) and not img2img
    batches = payload.plan_batches(
        p.all_prompts,
        p.all_negative_prompts,
        p.all_seeds,
        p.all_subseeds,
        batch_size=int(p.batch_size),
        n_iter=int(p.n_iter),
        subseed_strength=float(getattr(p, "subseed_strength", 0) or 0),
        all_hr_prompts=getattr(p, "all_hr_prompts", None) if hr else None,
        all_hr_negative_prompts=getattr(p, "all_hr_negative_prompts", None) if hr else None,
    )
    client = make_client(p)
    try:
        scripts = payload.alwayson_scripts(_other_scripts_args(p))
        overrides = {name: getattr(opts, name) for name in FORWARDED_OPTIONS if _has_option(opts, name)}
        overrides.update(p.override_settings or {})
        overrides["sd_model_checkpoint"] = payload.model_name(settings.checkpoint)
        overrides["sd_vae"] = payload.model_name(settings.vae) if settings.vae else AUTOMATIC_VAE
        texts = list(p.all_prompts) + list(p.all_negative_prompts)
        for name in ("all_hr_prompts", "all_hr_negative_prompts"):
            texts += list(getattr(p, name, None) or [])
        extra_checkpoints = [getattr(p, name, None) or "" for name in ("refiner_checkpoint", "hr_checkpoint_name")]
        models, warnings = payload.job_models(
            settings.checkpoint,
            settings.vae,
            prompts=texts,
            extra_checkpoints=extra_checkpoints,
            controlnets=payload.controlnet_models(scripts),
            cloud=_cloud_models_or_none(client, p),
        )
        for warning in warnings:
            p.comment(f"Cloud: {warning}")

        if state.job_count == -1:
            state.job_count = int(p.n_iter)
        build = payload.img2img_payload if img2img else payload.txt2img_payload
        output = _Output()
        iterations_done = 0
        for number, batch in enumerate(batches):
            if state.skipped:
                state.skipped = False
            if state.interrupted or getattr(state, "stopping_generation", False):
                break
            if len(batches) > 1:
                state.job = f"Cloud batch {number + 1} out of {len(batches)}"
            body = build(p, batch, override_settings=overrides, alwayson_scripts=scripts)
            try:
                result = run_job(
                    client,
                    task_type=task,
                    payload=body,
                    models=models,
                    inference_type=settings.inference_type,
                    endpoint_name=settings.endpoint_name,
                    on_status=_progress(state),
                    should_stop=lambda: bool(state.interrupted or state.skipped),
                    poll_s=POLL_S,
                )
            except JobInterrupted:
                if state.skipped and not state.interrupted:
                    state.skipped = False
                    continue
                break
            except JobFailed as error:
                raise CloudGenerationError(f"Cloud inference failed: {error.reason}") from error
            except ApiError as error:
                raise CloudGenerationError(f"Cloud inference failed: {error.message}") from error
            output.add(p, batch, result)
            while iterations_done < (batch.first + batch.count) // max(int(p.batch_size), 1):
                iterations_done += 1
                state.nextjob()
    finally:
        client.close()
    return output.processed(p, settings)


def _has_option(opts: Any, name: str) -> bool:
    try:
        getattr(opts, name)
        return True
    except AttributeError:
        return False


def _prepare(p: Any) -> None:
    """What `process_images_inner` does before sampling, minus the model: defaults from options, the prompts
    with styles applied (`setup_prompts`), and concrete seeds, so the infotexts match what the cloud made."""
    opts = shared.opts
    if getattr(p, "restore_faces", None) is None:
        p.restore_faces = getattr(opts, "face_restoration", False)
    if getattr(p, "tiling", None) is None:
        p.tiling = getattr(opts, "tiling", False)
    fill = getattr(p, "fill_fields_from_opts", None)  # Forge
    if callable(fill):
        fill()
    if callable(getattr(p, "setup_prompts", None)):
        p.setup_prompts()
    else:  # before 1.6: the same, by hand
        count = p.batch_size * p.n_iter
        prompts = p.prompt if isinstance(p.prompt, list) else [p.prompt] * count
        negatives = p.negative_prompt if isinstance(p.negative_prompt, list) else [p.negative_prompt] * len(prompts)
        styles = shared.prompt_styles
        p.all_prompts = [styles.apply_styles_to_prompt(x, p.styles) for x in prompts]
        p.all_negative_prompts = [styles.apply_negative_styles_to_prompt(x, p.styles) for x in negatives]
    p.main_prompt = p.all_prompts[0]
    p.main_negative_prompt = p.all_negative_prompts[0]
    count = len(p.all_prompts)
    seed = processing.get_fixed_seed(p.seed)
    subseed = processing.get_fixed_seed(p.subseed)
    step = 1 if not getattr(p, "subseed_strength", 0) else 0
    if isinstance(seed, list):
        p.all_seeds = [int(s) for s in seed]
    else:
        p.all_seeds = [int(seed) + x * step for x in range(count)]
    if isinstance(subseed, list):
        p.all_subseeds = [int(s) for s in subseed]
    else:
        p.all_subseeds = [int(subseed) + x for x in range(count)]


def _other_scripts_args(p: Any) -> Iterable[tuple[str, Sequence[Any]]]:
    runner, args = getattr(p, "scripts", None), getattr(p, "script_args", None) or ()
    for script in getattr(runner, "alwayson_scripts", ()) if runner is not None else ():
        if type(script).__name__ == SCRIPT_CLASS or script.args_from is None:
            continue
        try:
            title = script.title()
        except Exception:
            continue
        yield title, list(args[script.args_from : script.args_to])


def _progress(state: Any) -> Callable[[str], None]:
    def on_status(status: str) -> None:
        state.sampling_steps = max(STATUS_STEPS.values())
        state.sampling_step = STATUS_STEPS.get(status, state.sampling_step)
        state.textinfo = f"Cloud job: {status}"

    return on_status


class _Output:
    """The images and metadata of a generation's batches, as `process_images_inner` gathers them."""

    def __init__(self) -> None:
        self.images: list[Any] = []
        self.extra: list[Any] = []
        self.infotexts: list[str] = []
        self.prompts: list[str] = []
        self.negative_prompts: list[str] = []
        self.seeds: list[int] = []
        self.subseeds: list[int] = []
        self.info: dict[str, Any] = {}

    def add(self, p: Any, batch: Any, result: Any) -> None:
        from PIL import Image

        info = _json_object(result.info)
        if not self.info:
            self.info = info
            _model_fields(p, info)
        count = batch.count
        decoded = []
        for data in result.images:
            image = Image.open(io.BytesIO(data))
            image.load()
            decoded.append(image)
        main, extra = decoded[:count], decoded[count:]
        texts = info.get("infotexts") if isinstance(info.get("infotexts"), list) else []
        seeds = _ints(info.get("all_seeds")) or p.all_seeds[batch.first : batch.first + count]
        subseeds = _ints(info.get("all_subseeds")) or p.all_subseeds[batch.first : batch.first + count]
        opts = shared.opts
        save = p.save_samples() if callable(getattr(p, "save_samples", None)) else _save_samples(p)
        for i, image in enumerate(main):
            text = texts[i] if i < len(texts) and isinstance(texts[i], str) else image.info.get("parameters", "")
            seed = seeds[i] if i < len(seeds) else batch.seed + i
            prompt = p.all_prompts[batch.first + i] if batch.first + i < len(p.all_prompts) else batch.prompt
            if save:
                path = p.outpath_samples or opts.outdir_samples or _default_outdir(p, "samples")
                images.save_image(image, path, "", seed, prompt, opts.samples_format, info=text, p=p)
            if opts.enable_pnginfo:
                image.info["parameters"] = text
            self.images.append(image)
            self.infotexts.append(text)
            self.prompts.append(prompt)
            self.negative_prompts.append(batch.negative_prompt)
            self.seeds.append(int(seed))
            self.subseeds.append(int(subseeds[i]) if i < len(subseeds) else batch.subseed + i)
        self.extra.extend(extra)  # e.g. ControlNet's detected maps, after the generated images

    def processed(self, p: Any, settings: CloudSettings) -> Any:
        opts = shared.opts
        if self.images:
            p.all_prompts, p.all_negative_prompts = self.prompts, self.negative_prompts
            p.all_seeds, p.all_subseeds = self.seeds, self.subseeds
            p.main_prompt, p.main_negative_prompt = self.prompts[0], self.negative_prompts[0]
        elif not getattr(p, "sd_model_name", None):
            p.sd_model_name = settings.checkpoint
        output_images = list(self.images)
        infotexts = list(self.infotexts)
        index_of_first_image = 0
        unwanted_grid = len(output_images) < 2 and opts.grid_only_if_multiple
        if output_images and (opts.return_grid or opts.grid_save) and not p.do_not_save_grid and not unwanted_grid:
            grid = images.image_grid(output_images, p.batch_size)
            text = infotexts[0]
            if opts.return_grid:
                infotexts.insert(0, text)
                if opts.enable_pnginfo:
                    grid.info["parameters"] = text
                output_images.insert(0, grid)
                index_of_first_image = 1
            if opts.grid_save:
                path = p.outpath_grids or opts.outdir_grids or _default_outdir(p, "grids")
                images.save_image(
                    grid,
                    path,
                    "grid",
                    p.all_seeds[0],
                    p.all_prompts[0],
                    opts.grid_format,
                    info=text,
                    short_filename=not opts.grid_extended_filename,
                    p=p,
                    grid=True,
                )
        output_images += self.extra
        infotexts += [""] * len(self.extra)
        return processing.Processed(
            p,
            images_list=output_images,
            seed=p.all_seeds[0] if p.all_seeds else p.seed,
            info=infotexts[0] if infotexts else "",
            subseed=p.all_subseeds[0] if p.all_subseeds else p.subseed,
            all_prompts=self.prompts or None,
            all_negative_prompts=self.negative_prompts or None,
            all_seeds=self.seeds or None,
            all_subseeds=self.subseeds or None,
            index_of_first_image=index_of_first_image,
            infotexts=infotexts or None,
        )


def _model_fields(p: Any, info: dict[str, Any]) -> None:
    """The model names the engine reports, where `process_images_inner` would put the local model's."""
    for name in ("sd_model_name", "sd_model_hash", "sd_vae_name", "sd_vae_hash"):
        value = info.get(name)
        if value is not None and hasattr(p, name):
            setattr(p, name, value)


def _save_samples(p: Any) -> bool:
    opts, state = shared.opts, shared.state
    return bool(opts.samples_save and not p.do_not_save_samples and not state.interrupted and not state.skipped)


def _default_outdir(p: Any, kind: str) -> str:
    tab = "img2img" if getattr(p, "init_images", None) is not None else "txt2img"
    return getattr(shared.opts, f"outdir_{tab}_{kind}", None) or os.path.join("outputs", f"{tab}-{kind}")


def _json_object(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _ints(values: Any) -> list[int]:
    if not isinstance(values, list):
        return []
    try:
        return [int(value) for value in values]
    except (TypeError, ValueError):
        return []


# --- the middleware ---------------------------------------------------------------------------------------


def make_client(p: Any = None) -> Any:
    """A client for the saved connection; `--esd-api-url` overrides its URL (the key never comes from flags).

    With `--esd-login`, a generation acts as the WebUI user who asked for it (`p.user`, A1111 1.7+)."""
    from aws_extension.client import MiddlewareClient
    from aws_extension.config import ConfigError, load_connection, normalize_api_url

    try:
        connection = load_connection()
    except ConfigError as error:
        raise CloudGenerationError(f"Cloud inference: {error}") from error
    if connection is None:
        raise CloudGenerationError(
            "Cloud inference is on, but no ESD connection is saved: enter the API URL and key in the Cloud tab"
        )
    url = getattr(shared.cmd_opts, "esd_api_url", None)
    api_url = normalize_api_url(url) if url else connection.api_url
    username = connection.username
    if getattr(shared.cmd_opts, "esd_login", False) and getattr(p, "user", None):
        username = p.user
    return MiddlewareClient(api_url, connection.api_key, username)


# --- login ---------------------------------------------------------------------------------------------------


def check_login(username: str, password: str) -> bool:
    """True if the middleware accepts this username and password (`POST /login` with the saved connection's key)."""
    from aws_extension.client import ApiError

    try:
        client = make_client()
    except CloudGenerationError as error:
        log.warning("ESD login: %s", error)
        return False
    try:
        client.login(username, password)
        return True
    except ApiError as error:
        if error.status not in (401, 400):
            log.warning("ESD login could not be checked: %s", error)
        return False
    finally:
        client.close()


def login_auth(local: Any) -> Callable[[str, str], bool]:
    """gradio's `auth` callable: the WebUI's own credentials (`--gradio-auth`), then the middleware's users."""
    pairs = {tuple(pair) for pair in local or () if isinstance(pair, (tuple, list)) and len(pair) == 2}

    def auth(username: str, password: str) -> bool:
        return (username, password) in pairs or check_login(username, password)

    return auth


def install_login() -> None:
    """Make gradio's launch (the WebUI calls it once, with `auth=` its own credentials or None) check logins
    against the middleware: the WebUI builds `auth` inside its `webui()`, so the launch is where it can be set."""
    import gradio

    launch = gradio.Blocks.launch
    if _is_ours(launch):
        return

    def launch_with_esd_login(self: Any, *args: Any, **kwargs: Any) -> Any:
        auth = kwargs.get("auth")
        if callable(auth):  # someone else's callable: leave it as it is
            return launch(self, *args, **kwargs)
        kwargs["auth"] = login_auth(auth)
        return launch(self, *args, **kwargs)

    gradio.Blocks.launch = _wrap(launch, launch_with_esd_login)


class _Choices:
    """The cloud's model and endpoint names, fetched on demand and kept for `CHOICES_TTL_S`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.models: dict[str, list[str]] = {}
        self.endpoints: list[dict[str, Any]] = []
        self.fetched = 0.0

    def fresh(self) -> bool:
        return bool(self.fetched) and time.monotonic() - self.fetched < CHOICES_TTL_S

    def refresh(self, client: Any) -> None:
        models: dict[str, list[str]] = {}
        for item in client.iter_checkpoints(statuses=["Active"]):
            names = item.get("name") or []
            names = [names] if isinstance(names, str) else list(names)
            bucket = models.setdefault(str(item.get("type", "")), [])
            bucket += [name for name in names if name not in bucket]
        endpoints = [item for item in client.iter_endpoints() if isinstance(item, dict)]
        with self.lock:
            self.models, self.endpoints, self.fetched = models, endpoints, time.monotonic()


_choices = _Choices()


def cloud_models(client: Any) -> dict[str, list[str]]:
    """Active cloud model names by type (fetched at most every `CHOICES_TTL_S`)."""
    if not _choices.fresh():
        _choices.refresh(client)
    return {kind: list(names) for kind, names in _choices.models.items()}


def _cloud_models_or_none(client: Any, p: Any) -> dict[str, list[str]] | None:
    """The cloud's model names; None (and a comment on `p`) when they cannot be listed: the job still runs,
    without the prompt's LoRAs and embeddings."""
    from aws_extension.client import ApiError

    try:
        return cloud_models(client)
    except ApiError as error:
        p.comment(f"Cloud: cannot list the cloud's models ({error.message}); LoRAs and embeddings are left out")
        return None


def refresh_choices(inference_type: str, endpoint: str, checkpoint: str, vae: str) -> tuple[Any, Any, Any, Any]:
    """The refresh button: new choices for the endpoint, checkpoint and VAE dropdowns, and a status line."""
    import gradio as gr

    try:
        client = make_client()
        try:
            _choices.refresh(client)
        finally:
            client.close()
    except Exception as error:  # shown to the user, never raised into the UI
        message = getattr(error, "message", None) or str(error)
        return gr.update(), gr.update(), gr.update(), gr.update(value=f"⚠️ {message}")
    endpoints = [""] + endpoint_names(inference_type)
    checkpoints = _choices.models.get("Stable-diffusion", [])
    vaes = [AUTOMATIC_VAE] + _choices.models.get("VAE", [])
    summary = f"{len(checkpoints)} checkpoints, {len(vaes) - 1} VAEs, {len(endpoints) - 1} {inference_type} endpoints"
    return (
        gr.update(choices=endpoints, value=endpoint if endpoint in endpoints else ""),
        gr.update(choices=checkpoints, value=checkpoint if checkpoint in checkpoints else _first(checkpoints)),
        gr.update(choices=vaes, value=vae if vae in vaes else AUTOMATIC_VAE),
        gr.update(value=summary),
    )


def endpoint_names(inference_type: str) -> list[str]:
    """InService endpoints of a type, from the last fetch."""
    return [
        str(item.get("endpoint_name"))
        for item in _choices.endpoints
        if item.get("endpoint_type") == inference_type and item.get("endpoint_status") == "InService"
    ]


def _first(values: Sequence[str]) -> str | None:
    return values[0] if values else None


def _cached_or_fetched(kind: str) -> list[str]:
    """Choices for an X/Y/Z axis (called when the user picks the axis): the cache, refreshed if stale."""
    if not _choices.fresh():
        try:
            client = make_client()
            try:
                _choices.refresh(client)
            finally:
                client.close()
        except Exception as error:
            log.warning("cloud inference: cannot list cloud models: %s", error)
    return list(_choices.models.get(kind, []))


# --- UI ---------------------------------------------------------------------------------------------------


def build_ui(script: Any, is_img2img: bool) -> list[Any]:
    """The switch's controls (no network: choices come from the 🔄 button or an earlier fetch)."""
    import gradio as gr

    checkpoints = _choices.models.get("Stable-diffusion", [])
    vaes = [AUTOMATIC_VAE] + _choices.models.get("VAE", [])
    with gr.Accordion(TITLE, open=False, elem_id=script.elem_id("accordion")):
        with gr.Row():
            enabled = gr.Checkbox(label="Generate in the cloud", value=False, elem_id=script.elem_id("enabled"))
            inference_type = gr.Radio(
                label="Endpoint type", choices=list(INFERENCE_TYPES), value="Async", elem_id=script.elem_id("type")
            )
        with gr.Row():
            endpoint = gr.Dropdown(
                label="Endpoint (optional)",
                choices=[""] + endpoint_names("Async"),
                value="",
                allow_custom_value=True,
                elem_id=script.elem_id("endpoint"),
            )
            checkpoint = gr.Dropdown(
                label="Cloud checkpoint",
                choices=checkpoints,
                value=_first(checkpoints),
                allow_custom_value=True,
                elem_id=script.elem_id("checkpoint"),
            )
            vae = gr.Dropdown(
                label="Cloud VAE",
                choices=vaes,
                value=AUTOMATIC_VAE,
                allow_custom_value=True,
                elem_id=script.elem_id("vae"),
            )
            refresh = gr.Button(value="\U0001f504", elem_id=script.elem_id("refresh"), elem_classes=["tool"])
        status = gr.Markdown("", elem_id=script.elem_id("status"))
    refresh.click(
        fn=refresh_choices,
        inputs=[inference_type, endpoint, checkpoint, vae],
        outputs=[endpoint, checkpoint, vae, status],
        show_progress=False,
    )
    inference_type.change(
        fn=lambda kind, current: gr.update(choices=[""] + endpoint_names(kind), value=""),
        inputs=[inference_type, endpoint],
        outputs=[endpoint],
        show_progress=False,
    )
    return [enabled, inference_type, endpoint, checkpoint, vae]


def ui_tabs() -> list[tuple[Any, str, str]]:
    """The Cloud tab, when `aws_extension.ui` exists (`build_cloud_tab() -> gr.Blocks`)."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("aws_extension.ui") is None:
        return []
    build = getattr(importlib.import_module("aws_extension.ui"), "build_cloud_tab", None)
    if not callable(build):
        return []
    # an embedded middleware's local endpoints can use this very WebUI as their engine (started with --api)
    engine_url = f"http://127.0.0.1:{getattr(shared.cmd_opts, 'port', None) or 7860}"
    return [(build(connection=_connection_with_flag_url(), engine_url=engine_url), "Cloud", "esd_cloud")]


def _connection_with_flag_url() -> Any:
    """With `--esd-api-url`: the saved connection on that URL; otherwise None (the tab reads the saved one)."""
    from aws_extension.config import ConfigError, load_connection, normalize_api_url

    url = getattr(shared.cmd_opts, "esd_api_url", None)
    if not url:
        return None
    try:
        connection = load_connection()
    except ConfigError:
        return None
    return dataclasses.replace(connection, api_url=normalize_api_url(url)) if connection else None


def register_callbacks() -> None:
    """The callbacks of `scripts/cloud_inference.py` (the WebUI clears them at every script reload)."""
    script_callbacks.on_before_ui(on_before_ui)
    script_callbacks.on_ui_tabs(ui_tabs)


def model_folders() -> dict[str, list[str]]:
    """The WebUI's model folders by checkpoint type (what the Cloud tab may upload), those that exist:
    `--ckpt-dir`, `--vae-dir`, `--embeddings-dir`, `--hypernetwork-dir`, the built-in Lora extension's
    `--lora-dir`/`--lyco-dir-backcompat`, ControlNet's `--controlnet-dir`, and `models/<type>` under `models_path`."""
    from modules import paths

    options = shared.cmd_opts
    models = getattr(paths, "models_path", None) or os.path.join(getattr(paths, "data_path", "."), "models")

    def existing(*candidates: Any) -> list[str]:
        folders = [os.path.abspath(str(c)) for c in candidates if c]
        return [folder for folder in dict.fromkeys(folders) if os.path.isdir(folder)]

    def flag(name: str) -> Any:
        return getattr(options, name, None)

    found = {
        "Stable-diffusion": existing(flag("ckpt_dir"), os.path.join(models, "Stable-diffusion")),
        "Lora": existing(
            flag("lora_dir"), os.path.join(models, "Lora"), flag("lyco_dir_backcompat"), os.path.join(models, "LyCORIS")
        ),
        "VAE": existing(flag("vae_dir"), os.path.join(models, "VAE")),
        "ControlNet": existing(flag("controlnet_dir"), os.path.join(models, "ControlNet")),
        "embeddings": existing(flag("embeddings_dir")),
        "hypernetworks": existing(flag("hypernetwork_dir"), os.path.join(models, "hypernetworks")),
    }
    return {kind: folders for kind, folders in found.items() if folders}


# --- X/Y/Z plot ---------------------------------------------------------------------------------------------


def _xyz_modules(loaded: Iterable[Any] | None = None) -> list[Any]:
    found = []
    for module in _modules_to_repoint() if loaded is None else loaded:
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        options, option_class = namespace.get("axis_options"), namespace.get("AxisOption")
        if isinstance(options, list) and isinstance(option_class, type):
            found.append(module)
    return found


def _confirm_cloud(p: Any, values: Sequence[Any]) -> None:
    if not _enabled(p):
        raise RuntimeError(f"the [Cloud] axes need '{TITLE}' switched on (Generate in the cloud)")


def _apply(attr: str) -> Callable[[Any, Any, Any], None]:
    def apply(p: Any, value: Any, values: Any) -> None:
        setattr(p, attr, value)

    return apply


def add_xyz_axes(loaded: Iterable[Any] | None = None) -> None:
    """Add "[Cloud] Checkpoint" and "[Cloud] VAE" to every loaded X/Y/Z plot's `axis_options`."""
    for module in _xyz_modules(loaded):
        labels = {getattr(option, "label", None) for option in module.axis_options}
        axis = module.AxisOption
        if "[Cloud] Checkpoint" not in labels:
            module.axis_options.append(
                axis(
                    "[Cloud] Checkpoint",
                    str,
                    _apply(CHECKPOINT_ATTR),
                    confirm=_confirm_cloud,
                    cost=1.0,
                    choices=lambda: _cached_or_fetched("Stable-diffusion"),
                )
            )
        if "[Cloud] VAE" not in labels:
            module.axis_options.append(
                axis(
                    "[Cloud] VAE",
                    str,
                    _apply(VAE_ATTR),
                    confirm=_confirm_cloud,
                    cost=0.7,
                    choices=lambda: [AUTOMATIC_VAE] + _cached_or_fetched("VAE"),
                )
            )
